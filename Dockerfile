# catchup: the daemon and the per-shard cycle Jobs run this image.
# Server binaries are the ephemeral instances' (mariadbd, postgres), matching the
# major versions of the sources; pick the base release that ships yours.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      mariadb-server mariadb-client mariadb-backup postgresql zstd util-linux \
 && rm -rf /var/lib/apt/lists/* \
 # The image runs its servers as its own user, never as root.
 && groupadd --gid 10001 catchup \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/catchup --create-home catchup

WORKDIR /opt/catchup
COPY requirements.runtime.lock pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/catchup/venv \
 && /opt/catchup/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.runtime.lock \
 && /opt/catchup/venv/bin/pip install --no-cache-dir --no-deps . \
 && ln -s /opt/catchup/venv/bin/catchup /usr/local/bin/catchup

ENV CATCHUP_CONFIG=/etc/catchup/config/catchup.toml \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["catchup"]
CMD ["serve"]
