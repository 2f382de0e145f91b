# popgate's container image: a release build on Debian bookworm, then a
# runtime image FROM scratch that holds only the binary, the few shared
# libraries it loads (glibc, libgcc_s), CA certificates, a non-root user and
# an SBOM. No shell, no package manager, no base image to patch at run time.
#
#   docker build -t popgate \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE=https://git.example.net/popgate .
#   docker run --rm -v "$PWD/popgate.toml:/etc/popgate/popgate.toml:ro" \
#     -p 110:110 -p 995:995 -p 9100:9100 popgate
# For amd64 and arm64 at once (arm64 under QEMU on an amd64 host, or on an
# arm64 builder node): docker buildx build --platform linux/amd64,linux/arm64
# (same build arguments) -t REGISTRY/popgate:VERSION --push .
#
# With no package database, an image scan finds nothing: give scanners the
# SBOM, /usr/share/doc/popgate/sbom.cdx.json (CycloneDX 1.5: popgate, the
# crates compiled into it as pkg:cargo, the Debian packages of the copied
# libraries and CA certificates as pkg:deb), made by deploy/docker/mkrootfs
# (trivy sbom, grype sbom:; docs/kubernetes.md). OCI labels:
# version (VERSION, checked against the binary), revision and source (build
# arguments), licenses.
#
# Health: the image has no shell and no curl; its HEALTHCHECK runs
# `popgate healthcheck`, which GETs /healthz on the metrics port (set
# [metrics] address to 0.0.0.0:9100 or 127.0.0.1:9100). Kubernetes probes
# /healthz (liveness) and /readyz (readiness, 503 while draining) over HTTP.
# See docs/kubernetes.md.

ARG RUST_VERSION=1.95
# popgate's version (Cargo.toml's workspace.package.version): the build
# fails when the binary says otherwise.
ARG VERSION=0.1.0
# The commit and the repository the image is built from.
ARG REVISION=unknown
ARG SOURCE=""

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG VERSION
ARG REVISION
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit,
# buildah); the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    POPGATE_COMMIT="$REVISION" CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked -p popgate \
 && cp target/release/popgate /popgate \
 && built=$(/popgate --version) && built=${built#popgate } && built=${built%% *} \
 && { [ "$built" = "$VERSION" ] || { echo "VERSION=$VERSION, but the binary is $built" >&2; exit 1; }; }
# The rust image carries ca-certificates; mkrootfs copies them over, and
# writes the SBOM (cargo tree reads the crates the build fetched).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    sh deploy/docker/mkrootfs /popgate /rootfs /src && mkdir /empty

FROM scratch AS runtime
ARG VERSION
ARG REVISION
ARG SOURCE
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
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
