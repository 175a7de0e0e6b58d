# UNTESTED: Docker does not run on this project's machines, so this file has never been built.
#
# `make package` for machines without Debian's musl-tools (macOS, Windows, other distributions):
# Debian's Rust image, Debian's musl-tools (the C compiler for aws-lc under the Azure SDK's TLS)
# and the Rust musl target — what scripts/tools.sh installs on Debian — then `cargo xtask
# package` on the working copy mounted at /src. No build context is needed (nothing is copied):
#
#   docker build --platform linux/amd64 -t iothub-sas-package - < scripts/package.Dockerfile
#   docker run --rm --platform linux/amd64 -v "$PWD:/src" -v iothub-sas-target:/src/target \
#     iothub-sas-package
#
# writes dist/handler.zip into the working copy (README.md, "Packaging without Debian's tools").
FROM rust:1-bookworm
RUN apt-get update \
 && apt-get install --yes --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
CMD ["cargo", "xtask", "package"]
