# gantry's server and runner image: `gantry server` by default; `gantry runner` for a
# remote runner (give it the Docker socket). Built by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gantry

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gantry /usr/local/bin/gantry
ENV GANTRY_ADDR=0.0.0.0:8000 \
    GANTRY_DATA_DIR=/data \
    GANTRY_RUNNER_DATA_DIR=/data/runner
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["gantry"]
CMD ["server"]
