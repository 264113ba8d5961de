# buildcache-operator image: docker build -f images/operator.Dockerfile -t buildcache/operator:0.1.0 .
# (from the repository root). scripts/build-images assembles the same runtime image as an OCI
# layout without a container engine; both install the runtime packages in images/operator.packages.

# Build stage: the compilers and -dev packages scripts/setup installs for building (GoogleTest and
# python3 only because configuring the project looks for them).
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libcpprest-dev libyaml-cpp-dev libgrpc++-dev libprotobuf-dev protobuf-compiler \
      protobuf-compiler-grpc liblmdb-dev libssl-dev libboost-dev libboost-system-dev \
      libgtest-dev libgmock-dev zlib1g-dev libdeflate-dev nlohmann-json3-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && ninja -C /build buildcache-operator \
 && strip /build/bin/buildcache-operator

# Runtime stage: only the shared libraries the binary links (images/operator.packages, derived from
# ldd by scripts/build-images --update-packages) and the CA certificates.
FROM debian:12-slim
COPY images/operator.packages /tmp/runtime.packages
RUN apt-get update \
 && sed 's/#.*//' /tmp/runtime.packages | xargs \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime.packages \
 && groupadd --system --gid 65532 buildcache \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin buildcache
COPY --from=build /build/bin/buildcache-operator /usr/local/bin/buildcache-operator
# The operator only talks to the API server: it never needs root.
USER 65532:65532
EXPOSE 8080 9443
ENTRYPOINT ["/usr/local/bin/buildcache-operator"]
