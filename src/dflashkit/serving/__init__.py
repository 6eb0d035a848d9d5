"""HTTP only: the OpenAI-compatible server (`app.create_app`) over one engine thread; see docs/serving.md."""
