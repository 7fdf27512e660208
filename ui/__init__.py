"""The web app: FastAPI with the Gradio chat UI mounted, staff view and HTTP API."""
