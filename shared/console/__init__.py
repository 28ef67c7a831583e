"""What the two web consoles share: sign-in sessions, CSRF protection, Chinese/English texts, the page frame.

Why server-rendered pages (Jinja2) with htmx, and charts drawn as SVG on the server:
- `make run` needs no Node.js and no build step; the package ships everything
  (htmx 2.0.11, 52 KB, in static/, MIT licence beside it);
- every page works without JavaScript (plain forms, POST then redirect);
  htmx only refreshes live parts (counts, progress bars) in place;
- the numbers in a chart are the numbers in the table next to it, computed in
  one place (Python), so a chart cannot disagree with the report it shows, and
  tests can read it.
The one exception is the compliance page's 30-day trend (a line per tier over 30 days, switchable per unit):
there a real chart library earns its weight (axes, tooltips, switching series without a reload), so Chart.js
4.6.1 (chart.umd.min.js from the npm package, unmodified, MIT licence in chart.LICENSE.txt) draws it in the
browser from JSON the server computes (services/dispatcher/reports daily_trend). Chosen over uPlot (smaller,
but no tooltips or legend without plugins) and ECharts (about 1 MB): canvas, no build step, no eval (our
Content-Security-Policy allows scripts from 'self' only).
"""
