"""The analysts' console at ``/console``: server-rendered pages of the service itself.

``routes`` is the HTTP side (Litestar router, session, CSRF, error pages), ``pages``
gathers what each page shows from the stores, ``session`` says who is signed in and
``formatting`` writes numbers and times for people.
"""
