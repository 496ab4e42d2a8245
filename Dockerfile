FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git bubblewrap && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Log lines reach `docker compose logs` as they are written.
ENV PYTHONUNBUFFERED=1
# Dependencies first (pyproject.toml installs no code of ours), so a code change reuses this layer.
COPY pyproject.toml constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt .
COPY . .
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput
ENV ORCHESTRATOR_DATA_DIR=/data ORCHESTRATOR_HOST=0.0.0.0 ORCHESTRATOR_PORT=8000
EXPOSE 8000
