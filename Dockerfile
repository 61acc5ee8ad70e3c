# The image docker-compose.yml builds for the gateway and the workers.
# Not built on the project's machines (no Docker engine there): the same topology is tested with
# local processes (tests/test_kafka_scaleout.py). torch is pinned to 2.13.0; on a machine whose
# package index would resolve it to a CUDA build, point pip at a CPU wheel first.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENV LIVECOACH_DATA_DIR=/data LIVECOACH_CACHE_DIR=/cache
EXPOSE 8000
CMD ["livecoach", "serve", "--host", "0.0.0.0", "--port", "8000"]
