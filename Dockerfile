FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY . .
RUN pip install --no-cache-dir -c constraints.txt . \
 && SECRET_KEY=build-only python manage.py collectstatic --noinput
ENV ORCHESTRATOR_DATA_DIR=/data ORCHESTRATOR_HOST=0.0.0.0 ORCHESTRATOR_PORT=8000
EXPOSE 8000
