# finetune studio for a CUDA GPU host.
#
#   docker build -t finetune-studio .
#   docker run --gpus all -p 7860:7860 -e FINETUNE_AUTH=me:secret -e HF_TOKEN \
#       -v finetune-hf:/data/hf -v finetune-workspace:/data/workspace finetune-studio
#
# One copy of CUDA: the Linux torch wheels bring the CUDA runtime and cuDNN as pip packages, so
# the base is a slim Python image, not a CUDA image (that would ship a second, unused copy). The
# host only needs the NVIDIA driver and the NVIDIA Container Toolkit (for --gpus).
# No token is ever baked in: HF_TOKEN is passed at `docker run` time (see docs/deploy.md).
FROM python:3.11-slim-bookworm

# tini as PID 1 forwards `docker stop`'s SIGTERM to the app and reaps zombies
# (Debian's package; the version follows the pinned base image)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with UID 1000: matches Hugging Face Spaces and most hosts' first user,
# so bind-mounted volumes stay writable.
RUN useradd --create-home --uid 1000 --shell /bin/bash user \
    && mkdir -p /data/hf /data/workspace /app \
    && chown -R user:user /data /app

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/data/hf \
    FINETUNE_WORKSPACE=/data/workspace \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# torch first, from the index that matches the host's driver (default: PyPI's Linux wheels,
# which are CUDA builds); then the pinned libraries, which keep that torch.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
COPY docker/requirements.txt /tmp/requirements.txt
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    fi \
    && pip install --no-cache-dir -r /tmp/requirements.txt "torch==${TORCH_VERSION}"

WORKDIR /app
COPY --chown=user:user . /app
# editable: the `finetune` CLI then runs this tree, which also holds presets/ and accelerate_configs/
RUN pip install --no-cache-dir --no-deps -e . \
    && chmod 0755 /app/docker/entrypoint.sh

# llama.cpp's GGUF converter (Python files from the pinned llama-cpp-python sdist), fetched at build time so
# a GGUF export needs no network at run time; K-quants would need llama-cpp-python compiled (.[gguf])
ENV FINETUNE_GGUF_CONVERTER=/opt/llama.cpp-converter
RUN finetune gguf-converter --to /opt/llama.cpp-converter

USER 1000:1000
ENV HOME=/home/user

# Models downloaded from the Hub and the runs (adapters, checkpoints, metrics) outlive the container.
VOLUME ["/data/hf", "/data/workspace"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('GRADIO_SERVER_PORT', '7860'), timeout=5)"]

# entrypoint.sh refuses to listen on 0.0.0.0 without FINETUNE_AUTH (or FINETUNE_ALLOW_NO_AUTH=1)
ENTRYPOINT ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
