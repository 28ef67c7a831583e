"""Targeted publicity campaigns (精准宣防): a segment of bound citizens, a short message, delivered once each."""
