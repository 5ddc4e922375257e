"""modelport's HTTP face: an Ollama-compatible API on Falcon (WSGI), served by gunicorn.

``app.create_app(services, settings)`` builds the application (tests pass fakes);
``app.get_app()`` is the factory gunicorn calls; ``server.serve(settings)`` runs it.
Nothing is imported here, so importing the package stays free.
"""
