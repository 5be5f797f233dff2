package main

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	cohortv1 "cohort.dev/proto/cohort/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func TestScoreMatch(t *testing.T) {
	for _, c := range []struct {
		target, completion string
		score              float64
		passed             bool
	}{
		{"ABC", "ABC", 1, true},
		{"ABC", "ABD", 2.0 / 3, false},
		{"ABC", "AB", 2.0 / 3, false},
		{"ABC", "ABCD", 3.0 / 4, false}, // extra characters count against
		{"ABC", "", 0, false},
		{"ABC", "xyz", 0, false},
		{"", "", 1, true},
		{"", "a", 0, false},
		{"héé", "hée", 2.0 / 3, false}, // code points, not bytes
	} {
		s, p := ScoreMatch(c.target, c.completion)
		if math.Abs(s-c.score) > 1e-12 || p != c.passed {
			t.Errorf("ScoreMatch(%q, %q) = %v %v, want %v %v", c.target, c.completion, s, p, c.score, c.passed)
		}
	}
}

func TestScoreLength(t *testing.T) {
	for _, c := range []struct {
		want       int
		completion string
		score      float64
		passed     bool
	}{
		{3, "abc", 1, true},
		{0, "", 1, true},
		{4, "ab", 0.5, false},
		{2, "abcd", 0.5, false},
		{0, "abc", 0, false},
		{3, "", 0, false},
		{2, "éé", 1, true},
	} {
		s, p := ScoreLength(c.want, c.completion)
		if math.Abs(s-c.score) > 1e-12 || p != c.passed {
			t.Errorf("ScoreLength(%d, %q) = %v %v, want %v %v", c.want, c.completion, s, p, c.score, c.passed)
		}
	}
}

func TestJudge(t *testing.T) {
	v, err := Judge("match", `{"target": "OK", "from": "x"}`, "OK")
	if err != nil || v.Score != 1 || !v.Passed || v.Details != "exact" {
		t.Errorf("match exact: %+v %v", v, err)
	}
	v, err = Judge("length", `{"chars": 4}`, "ab")
	if err != nil || v.Score != 0.5 || v.Passed || v.Details != "2 chars, want 4" {
		t.Errorf("length: %+v %v", v, err)
	}
	if _, err = Judge("poetry", "{}", "x"); err == nil {
		t.Error("unknown task accepted")
	} else if _, ok := err.(*UnknownTaskError); !ok {
		t.Errorf("unknown task: %T %v", err, err)
	}
	for _, c := range []struct{ task, meta string }{
		{"match", ""}, {"match", "{not json"}, {"match", "[1]"}, {"match", "null"},
		{"match", `{"target": 3}`}, {"length", `{"chars": -1}`}, {"length", `{"chars": 1.5}`},
		{"length", `{"chars": "3"}`}, {"length", `{}`},
	} {
		if _, err := Judge(c.task, c.meta, "x"); err == nil {
			t.Errorf("Judge(%q, %q) accepted bad metadata", c.task, c.meta)
		} else if _, ok := err.(*BadMetadataError); !ok {
			t.Errorf("Judge(%q, %q): %T %v", c.task, c.meta, err, err)
		}
	}
}

// dial serves a verifier on an in-memory listener and returns a client connection to it.
func dial(t *testing.T, v *verifier, token string) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s, _ := newServer(v, token)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func code(err error) codes.Code { return status.Code(err) }

func TestServer(t *testing.T) {
	cc := dial(t, &verifier{}, "s3cret")
	c := cohortv1.NewVerifierClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	auth := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")

	// health needs no token
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "cohort.v1.Verifier"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	req := &cohortv1.VerifyRequest{Task: "match", MetadataJson: `{"target": "ABC"}`, Completion: "ABD"}
	if _, err := c.Verify(ctx, req); code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")
	if _, err := c.Verify(bad, req); code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v", err)
	}
	r, err := c.Verify(auth, req)
	if err != nil || math.Abs(r.GetScore()-2.0/3) > 1e-12 || r.GetPassed() {
		t.Errorf("Verify: %v %v", r, err)
	}
	if _, err := c.Verify(auth, &cohortv1.VerifyRequest{Task: "poetry"}); code(err) != codes.NotFound {
		t.Errorf("unknown task: %v", err)
	}
	if _, err := c.Verify(auth, &cohortv1.VerifyRequest{Task: "match", MetadataJson: "{not json"}); code(err) != codes.InvalidArgument {
		t.Errorf("bad metadata: %v", err)
	}

	// VerifyBatch: one reply per request, in order; a bad item alone gets NaN
	br, err := c.VerifyBatch(auth, &cohortv1.VerifyBatchRequest{Requests: []*cohortv1.VerifyRequest{
		{Task: "length", MetadataJson: `{"chars": 2}`, Completion: "ab"},
		{Task: "poetry"},
		{Task: "match", MetadataJson: `{"target": "X"}`, Completion: "Y"},
	}})
	if err != nil || len(br.GetReplies()) != 3 {
		t.Fatalf("VerifyBatch: %v %v", br, err)
	}
	rs := br.GetReplies()
	if rs[0].GetScore() != 1 || !rs[0].GetPassed() || !math.IsNaN(rs[1].GetScore()) || rs[1].GetDetails() == "" ||
		rs[2].GetScore() != 0 || rs[2].GetPassed() {
		t.Errorf("VerifyBatch replies: %v", rs)
	}
	if _, err := c.VerifyBatch(auth, &cohortv1.VerifyBatchRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := c.VerifyBatch(ctx, &cohortv1.VerifyBatchRequest{Requests: []*cohortv1.VerifyRequest{req}}); code(err) != codes.Unauthenticated {
		t.Errorf("batch without token: %v", err)
	}
}

func TestDeadline(t *testing.T) {
	c := cohortv1.NewVerifierClient(dial(t, &verifier{delay: 5 * time.Second}, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.Verify(ctx, &cohortv1.VerifyRequest{Task: "match", MetadataJson: `{"target": "A"}`})
	if code(err) != codes.DeadlineExceeded || time.Since(t0) > 2*time.Second {
		t.Errorf("slow verifier past its deadline: %v after %v", err, time.Since(t0))
	}
}
