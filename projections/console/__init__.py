"""The web console (`upm serve`): changes, approvals, evidence, KPIs and drift in the browser.

``app.py`` is the HTTP shell (Starlette under uvicorn, Jinja2 templates), ``routes/`` its pages,
``data.py`` what it reads and sends over the bus as the signed-in person, ``views.py`` and
``svg.py`` the pure view models and drawings, ``auth.py`` sessions and CSRF.
"""
