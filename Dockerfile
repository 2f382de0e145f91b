# popgate's container image: a release build on Debian bookworm, then a
# runtime image FROM scratch that holds only the binary, the few shared
# libraries it loads (glibc, libgcc_s), CA certificates and a non-root user.
# No shell, no package manager, no base image to patch at run time.
#
#   docker build -t popgate .
#   docker run --rm -v "$PWD/popgate.toml:/etc/popgate/popgate.toml:ro" \
#     -p 110:110 -p 995:995 -p 9100:9100 popgate
#
# Health: the image has no shell and no curl; its HEALTHCHECK runs
# `popgate healthcheck`, which GETs /healthz on the metrics port (set
# [metrics] address to 0.0.0.0:9100 or 127.0.0.1:9100). Kubernetes probes
# /healthz (liveness) and /readyz (readiness, 503 while draining) over HTTP.
# See README, "Deployment".

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit,
# buildah); the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p popgate \
 && cp target/release/popgate /popgate \
 && /popgate --version
# The rust image carries ca-certificates; mkrootfs copies them over.
RUN sh deploy/docker/mkrootfs /popgate /rootfs && mkdir /empty

FROM scratch AS runtime
COPY --from=build /rootfs/ /
# The two directories popgate may write to (a Maildir volume's mount point
# and its working directory) belong to its user; all else is root's.
COPY --from=build --chown=65532:65532 /empty/ /var/mail/
COPY --from=build --chown=65532:65532 /empty/ /var/lib/popgate/
USER 65532:65532
WORKDIR /var/lib/popgate
# 110: POP3 (STLS), 995: POP3S (implicit TLS), 9100: metrics, /healthz, /readyz.
# Unprivileged ports below 1024: Docker allows them in a container by default
# (net.ipv4.ip_unprivileged_port_start=0); the Helm chart sets that sysctl.
EXPOSE 110 995 9100
ENV POPGATE_SERVER__LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/popgate"]
CMD ["serve", "--config", "/etc/popgate/popgate.toml"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/popgate", "healthcheck", "--url", "http://127.0.0.1:9100/healthz"]
LABEL org.opencontainers.image.title="popgate" \
      org.opencontainers.image.description="Multi-tenant POP3 gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
