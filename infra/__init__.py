"""Infrastructure: container files and the local sandbox."""
