# stateguard container image: one image with the binaries (stateguard-webhook, stateguardctl,
# stateguard-csi, stateguard-format-gate), built on Debian 12 and run on debian:12-slim with only
# the shared libraries they load, as a non-root user. The Kubernetes manifests run
# `stateguard-webhook` (the entry point); stateguardctl is there for
# `kubectl exec ... stateguardctl rules` and CI jobs. The CSI sidecar component
# (manifests/csi-sidecar) runs `stateguard-csi` in a CSI driver's node pod (as root: it reads the
# host's block devices) and copies `stateguard-format-gate` into the driver's container.
#
#   docker build -t ghcr.io/stateguard/stateguard:0.1.0 .
#
# (ghcr.io/stateguard/stateguard is a placeholder: push to your own registry and set the image in
# the kustomize overlay or the Helm value image.repository.)

# ---- build stage: the same Debian packages as a development machine ----
FROM debian:12 AS build
WORKDIR /src
# scripts/install-deps.sh holds the one package list (build, test and tool packages); running it
# here keeps the image build in step with `make`.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DSTATEGUARD_BUILD_TESTS=OFF -DSTATEGUARD_BUILD_BENCH=OFF \
 && cmake --build /build -j"$(nproc)" \
      --target stateguard-webhook stateguardctl stateguard-csi stateguard-format-gate \
 && strip /build/bin/stateguard-webhook /build/bin/stateguardctl \
      /build/bin/stateguard-csi /build/bin/stateguard-format-gate

# ---- runtime stage: shared libraries only ----
FROM debian:12-slim
# The Debian 12 packages holding every library `ldd` lists for the binaries (checked by
# tests/integration/manifests_test.cc): libc6, libgcc-s1, libstdc++6 and libblkid1 are already in
# the slim image and named so the list is complete. The second line is stateguard-csi's: gRPC
# (libgrpc++1.51, libgrpc29 and what they load), protobuf, libblkid, nghttp2 (its HTTP/2 front). stateguard-format-gate is
# statically linked (it runs inside other images) and needs none.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libc6 libgcc-s1 libstdc++6 \
      libssl3 libcpp-httplib0.11 libyaml-cpp0.7 libsimdjson14 libjemalloc2 libtomlplusplus3 \
      libbrotli1 zlib1g \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libre2-9 libc-ares2 libblkid1 \
      libnghttp2-14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/bin/stateguard-webhook /build/bin/stateguardctl \
     /build/bin/stateguard-csi /build/bin/stateguard-format-gate /usr/local/bin/
LABEL org.opencontainers.image.title="stateguard" \
      org.opencontainers.image.description="Admission webhook and CSI sidecar that refuse Kubernetes API changes and volume formats destroying persistent data" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/stateguard/stateguard"
# Non-root (the Deployment's runAsUser matches); the root filesystem can be read-only: the
# webhook writes only to stdout/stderr. The CSI sidecar's container sets runAsUser 0 itself.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["stateguard-webhook"]
CMD ["--help"]
