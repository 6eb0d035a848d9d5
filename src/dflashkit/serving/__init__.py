"""HTTP only: the OpenAI-compatible server (`app.create_app`) over one engine, in a process of its own or on
a thread; see docs/serving.md."""
