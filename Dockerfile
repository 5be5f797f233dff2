# Cohort images: a build stage that compiles, and a runtime stage (Debian 12 slim) with only
# the binaries, their runtime libraries and what the Python verifier example needs.
# With a registry: `docker build -t cohort .`. Without one (this machine): run
# deploy/make-base-images.sh first, which makes debian:12 and debian:12-slim locally.

FROM debian:12 AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config libopenblas-dev libcjson-dev zlib1g-dev libgrpc-dev \
      libprotobuf-c-dev protobuf-c-compiler grpc-proto libuv1-dev libmicrohttpd-dev \
      libpcre2-dev libutf8proc-dev > /dev/null
WORKDIR /src
COPY CMakeLists.txt ./
COPY common common
COPY learner learner
COPY reward reward
COPY actor actor
COPY proto proto
COPY bench bench
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCOHORT_TESTS=OFF > /dev/null \
 && cmake --build /build -j"$(nproc)" --target cohort-learner cohort-reward cohort-actor cohortctl cohort-tool cohort-train > /dev/null \
 && mkdir -p /out/bin && cp /build/cohort-learner /build/cohort-reward /build/cohort-actor \
      /build/cohortctl /build/cohort-tool /build/cohort-train /out/bin/

FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libopenblas0-pthread libcjson1 zlib1g libgrpc29 libprotobuf-c1 libuv1 libmicrohttpd12 \
      libpcre2-8-0 libutf8proc2 \
      python3 python3-grpcio python3-protobuf python3-grpc-tools python3-pkg-resources grpc-proto \
      gnuplot-nox > /dev/null \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
COPY --from=build /out/bin/ /usr/local/bin/
COPY proto /opt/cohort/proto
COPY reward/examples/python-verifier /opt/cohort/python-verifier
ENV COHORT_PROTO_DIR=/opt/cohort/proto
WORKDIR /data
CMD ["cohort-learner", "--help"]
