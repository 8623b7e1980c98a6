# Build a small, non-root image of the controller:
#   docker build -t iothub-dynreg:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Without the default "emulator" feature: the image carries no emulator code.
RUN cargo build --release --locked --no-default-features --bin iothub-dynreg

# distroless: no shell, no package manager; "nonroot" runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/iothub-dynreg /usr/local/bin/iothub-dynreg
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/iothub-dynreg"]
CMD ["run"]
