# syntax=docker/dockerfile:1
# bgp-speaker: the ExaBGP-based EIP speaker for Kube-OVN VPC NAT gateways.
#
#   make image                       # or: docker build -t bgp-speaker:0.1.0 .
#
# Entry points: `bgp-speaker` (on PATH) and /kube-ovn/kube-ovn-speaker, the path Kube-OVN's
# controller runs for the NAT gateway speaker sidecar. Runs as uid/gid 65532 and works with a
# read-only root filesystem: everything it writes goes to /run/bgp-speaker (TMPDIR), which
# such a deployment mounts as an emptyDir (medium: Memory).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/bgp-speaker
# Dependencies first (pinned, a layer of their own), then the package without dependencies.
COPY image/constraints.txt /src/image/constraints.txt
RUN /opt/bgp-speaker/bin/pip install --require-virtualenv -r /src/image/constraints.txt
COPY pyproject.toml README.md /src/
COPY bgp_speaker /src/bgp_speaker
RUN /opt/bgp-speaker/bin/pip install --require-virtualenv --no-deps /src \
    && /opt/bgp-speaker/bin/pip check \
    && /opt/bgp-speaker/bin/python -m compileall -q /opt/bgp-speaker/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="bgp-speaker" \
      org.opencontainers.image.description="Announces Kube-OVN VPC NAT gateway EIPs over BGP (ExaBGP inside)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/bgp-speaker /opt/bgp-speaker
COPY image/kube-ovn-speaker /kube-ovn/kube-ovn-speaker
RUN chmod 0755 /kube-ovn/kube-ovn-speaker \
    && groupadd --system --gid 65532 bgp-speaker \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin bgp-speaker \
    && install -d -o 65532 -g 65532 -m 0700 /run/bgp-speaker
ENV PATH=/opt/bgp-speaker/bin:$PATH \
    TMPDIR=/run/bgp-speaker \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /run/bgp-speaker
# health, status and metrics (kube-ovn-speaker's metrics port)
EXPOSE 10667
ENTRYPOINT ["bgp-speaker"]
CMD ["run"]
