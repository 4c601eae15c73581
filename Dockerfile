# One Dockerfile, a target per binary:
#   docker build --target operator -t eventpipe/eventpipe-operator .
#   docker build --target ingress  -t eventpipe/eventpipe-ingress .
#   docker build --target worker   -t eventpipe/eventpipe-worker .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p eventpipe-operator -p eventpipe-ingress -p eventpipe-worker \
 && mkdir /out && cp target/release/eventpipe-operator target/release/eventpipe-ingress target/release/eventpipe-worker /out/

# glibc and libgcc only; no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

FROM runtime AS operator
COPY --from=build /out/eventpipe-operator /usr/local/bin/eventpipe-operator
ENTRYPOINT ["/usr/local/bin/eventpipe-operator"]

FROM runtime AS ingress
COPY --from=build /out/eventpipe-ingress /usr/local/bin/eventpipe-ingress
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/eventpipe-ingress"]

FROM runtime AS worker
COPY --from=build /out/eventpipe-worker /usr/local/bin/eventpipe-worker
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/eventpipe-worker"]
