# Image of every confluence-stream process: producer, consumers, topic set-up, emulator.
# The console scripts (confluence-producer, confluence-consumer, confluence-topics,
# confluence-emulator) are on PATH; docker-compose.yml picks one per service.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, pinned by constraints.txt, so code changes reuse this layer.
COPY pyproject.toml constraints.txt ./
COPY producer/ producer/
COPY consumer/ consumer/
COPY schemas/ schemas/
COPY emulator/ emulator/
COPY connections/ connections/
COPY infra/ infra/
RUN /opt/venv/bin/pip install --constraint constraints.txt .

FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --create-home --home-dir /home/app app
USER app
WORKDIR /home/app

CMD ["confluence-consumer", "--help"]
