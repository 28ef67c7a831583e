"""What the two web consoles share: sign-in sessions, CSRF protection, Chinese/English texts, the page frame.

Why server-rendered pages (Jinja2) with htmx, and charts drawn as SVG on the server:
- `make run` needs no Node.js and no build step; the package ships everything
  (htmx 2.0.11, 52 KB, in static/, MIT licence beside it);
- every page works without JavaScript (plain forms, POST then redirect);
  htmx only refreshes live parts (counts, progress bars) in place;
- the numbers in a chart are the numbers in the table next to it, computed in
  one place (Python), so a chart cannot disagree with the report it shows, and
  tests can read it.
"""
