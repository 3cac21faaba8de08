# Serving image: CPU torch, recsys, a bundle mounted at /bundle (or baked in with BUNDLE=...).
#   docker build -t recsys . && docker run -p 8000:8000 -v $PWD/artifacts/demo/bundle:/bundle:ro recsys
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RECSYS_ROOT=/home/recsys/work PORT=8000
WORKDIR /app

# CPU torch first: an unpinned torch would pull a multi-GB CUDA build
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY recsys ./recsys
COPY configs ./configs
RUN pip install -e . && useradd --create-home --uid 10001 recsys && mkdir -p /bundle \
    && chown recsys /bundle

USER recsys
EXPOSE 8000
# python, not curl: the slim image has no curl; the check sends X-API-Key when one is configured
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "recsys.serving.healthcheck"]
CMD ["sh", "-c", "python -m recsys.serve bundle=/bundle host=0.0.0.0 port=${PORT}"]
