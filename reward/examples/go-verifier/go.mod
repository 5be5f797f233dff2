module cohort.dev/examples/go-verifier

go 1.26.0

require (
	cohort.dev/proto v0.0.0
	google.golang.org/grpc v1.85.0
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

// cohort.dev/proto is the Go code of proto/cohort/v1 (go_package
// "cohort.dev/proto/cohort/v1;cohortv1"), generated into ./gen by build.sh, never committed.
replace cohort.dev/proto => ./gen
