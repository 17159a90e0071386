# rnntune: one image for the API, the dashboard and the workers.
#   docker build -t rnntune .        # torch from PyPI: CUDA-enabled on Linux x86-64, runs on CPU too
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU-only wheel index> -t rnntune:cpu .
#                                    # CPU-only: 1.7 GB instead of 5.7 GB (docs/compose.md)
#   docker build --build-arg PYTHON_IMAGE=<a CUDA runtime image with Python 3.11> -t rnntune:cuda .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rnntune ./rnntune
COPY service ./service
COPY models ./models
COPY studies ./studies
RUN pip install .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 TZ=UTC \
    RNNTUNE_DATA_DIR=/data RNNTUNE_DATABASE_URL=sqlite:////data/rnntune.db
RUN useradd --create-home --uid 10001 rnntune && mkdir -p /data && chown rnntune /data
COPY --from=build /opt/venv /opt/venv
COPY --chown=rnntune studies /app/studies
WORKDIR /app
USER rnntune
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["rnntune", "serve", "--host", "0.0.0.0", "--port", "8000"]
