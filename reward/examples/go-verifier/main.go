// Command go-verifier is a custom Cohort verifier in Go: copy this folder to write your own.
//
// It implements cohort.v1.Verifier (proto/cohort/v1/verifier.proto: Verify and VerifyBatch)
// and grpc.health.v1.Health, for the tasks of score.go ("match" and "length"). The Go code
// for cohort.v1 is generated from proto/ at build time by build.sh (see README.md); it is
// never committed.
//
//	./build.sh                          # -> bin/go-verifier
//	bin/go-verifier --port 50062 [--token-file FILE] [--log FILE] [--delay-ms N]
//
// Then route its tasks to it in cohort-reward's reward.json:
//
//	{"verifiers": [{"name": "go", "task": "length", "endpoints": ["127.0.0.1:50062"]}]}
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	cohortv1 "cohort.dev/proto/cohort/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxBatch is VerifyBatchRequest's documented limit (1 to 4096 requests).
const maxBatch = 4096

// verifier serves cohort.v1.Verifier.
type verifier struct {
	cohortv1.UnimplementedVerifierServer
	delay time.Duration // answer this late (to watch deadlines at work); 0 = at once

	logMu sync.Mutex
	log   *os.File // one JSON line per judged item; nil = no log
}

// toStatus maps a judging error onto the gRPC code verifier.proto asks for.
func toStatus(err error) error {
	var unknown *UnknownTaskError
	if errors.As(err, &unknown) {
		return status.Error(codes.NotFound, err.Error()) // -> ITEM_UNKNOWN_TASK
	}
	return status.Error(codes.InvalidArgument, err.Error()) // -> ITEM_FAILED with the message
}

// wait sleeps for the configured delay, or until the call is cancelled or past its deadline.
func (v *verifier) wait(ctx context.Context) error {
	if v.delay > 0 {
		t := time.NewTimer(v.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err() // DEADLINE_EXCEEDED or CANCELLED
	}
	return nil
}

func (v *verifier) record(ctx context.Context, rpc string, req *cohortv1.VerifyRequest, vd Verdict, err error) {
	if v.log == nil {
		return
	}
	rec := map[string]any{
		"rpc": rpc, "task": req.GetTask(), "prompt": req.GetPrompt(),
		"completion": req.GetCompletion(), "answer": req.GetAnswer(),
		"prompt_tokens": req.GetPromptTokens(), "completion_tokens": req.GetCompletionTokens(),
	}
	if json.Valid([]byte(req.GetMetadataJson())) {
		rec["metadata"] = json.RawMessage(req.GetMetadataJson())
	} else {
		rec["metadata_text"] = req.GetMetadataJson()
	}
	if dl, ok := ctx.Deadline(); ok {
		rec["deadline_ms"] = time.Until(dl).Milliseconds()
	}
	if err != nil {
		rec["error"] = err.Error()
	} else {
		rec["score"], rec["passed"], rec["details"] = vd.Score, vd.Passed, vd.Details
	}
	line, _ := json.Marshal(rec)
	v.logMu.Lock()
	defer v.logMu.Unlock()
	v.log.Write(append(line, '\n'))
}

// Verify judges one completion.
func (v *verifier) Verify(ctx context.Context, req *cohortv1.VerifyRequest) (*cohortv1.VerifyReply, error) {
	if err := v.wait(ctx); err != nil {
		return nil, err
	}
	vd, err := Judge(req.GetTask(), req.GetMetadataJson(), req.GetCompletion())
	v.record(ctx, "Verify", req, vd, err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &cohortv1.VerifyReply{Score: vd.Score, Passed: vd.Passed, Details: vd.Details}, nil
}

// VerifyBatch judges several completions: one reply per request, in order. An item that
// cannot be judged (unknown task, bad metadata) gets score NaN and the reason in details,
// which fails that item alone; a status other than OK would fail every item of the call.
func (v *verifier) VerifyBatch(ctx context.Context, req *cohortv1.VerifyBatchRequest) (*cohortv1.VerifyBatchReply, error) {
	n := len(req.GetRequests())
	if n == 0 || n > maxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "VerifyBatch takes 1 to %d requests, got %d", maxBatch, n)
	}
	if err := v.wait(ctx); err != nil {
		return nil, err
	}
	out := &cohortv1.VerifyBatchReply{Replies: make([]*cohortv1.VerifyReply, n)}
	for i, r := range req.GetRequests() {
		if err := ctx.Err(); err != nil { // stop work once the caller gave up
			return nil, status.FromContextError(err).Err()
		}
		vd, err := Judge(r.GetTask(), r.GetMetadataJson(), r.GetCompletion())
		v.record(ctx, "VerifyBatch", r, vd, err)
		if err != nil {
			out.Replies[i] = &cohortv1.VerifyReply{Score: math.NaN(), Details: err.Error()}
			continue
		}
		out.Replies[i] = &cohortv1.VerifyReply{Score: vd.Score, Passed: vd.Passed, Details: vd.Details}
	}
	return out, nil
}

// tokenCheck requires "authorization: Bearer <token>" on cohort.v1.Verifier calls (health
// calls never need a token). cohort-reward sends it when configured with the same token.
func tokenCheck(token string) grpc.UnaryServerInterceptor {
	want := []byte("Bearer " + token)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if token == "" || !strings.HasPrefix(info.FullMethod, "/cohort.v1.Verifier/") {
			return h(ctx, req)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		for _, got := range md.Get("authorization") {
			if subtle.ConstantTimeCompare([]byte(got), want) == 1 {
				return h(ctx, req)
			}
		}
		return nil, status.Error(codes.Unauthenticated, "missing or wrong bearer token for this verifier")
	}
}

// readToken reads a token file: its content, surrounding white space removed; never empty.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return t, nil
}

// newServer builds the gRPC server with the Verifier and Health services.
func newServer(v *verifier, token string) (*grpc.Server, *health.Server) {
	s := grpc.NewServer(
		grpc.MaxRecvMsgSize(16<<20), // a VerifyBatch of 4096 items with their token ids
		grpc.UnaryInterceptor(tokenCheck(token)),
	)
	cohortv1.RegisterVerifierServer(s, v)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("cohort.v1.Verifier", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	return s, hs
}

// probeHealth asks the health service at addr; 0 when SERVING (the container health check).
func probeHealth(addr string) int {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Printf("probe %s: %v", addr, err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Printf("probe %s: %v", addr, err)
		return 1
	}
	fmt.Println(r.GetStatus())
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return 1
	}
	return 0
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("go-verifier: ")
	host := flag.String("host", "0.0.0.0", "address to listen on")
	port := flag.Int("port", 50062, "port to listen on (0 = any free port, printed)")
	tokenFile := flag.String("token-file", "", "require \"authorization: Bearer <token>\", the token read from this file\n(or from $COHORT_VERIFIER_TOKEN)")
	logPath := flag.String("log", "", "append one JSON line per judged item to this file")
	delayMs := flag.Int("delay-ms", 0, "answer this many milliseconds late (to see deadlines at work)")
	probe := flag.String("probe", "", "do not serve: ask the grpc.health.v1 service at HOST:PORT and exit 0 when it is\nSERVING, 1 otherwise (a container health check)")
	flag.Parse()
	if *probe != "" {
		os.Exit(probeHealth(*probe))
	}
	if flag.NArg() > 0 || *port < 0 || *port > 65535 || *delayMs < 0 {
		flag.Usage()
		os.Exit(2)
	}

	token := os.Getenv("COHORT_VERIFIER_TOKEN")
	if *tokenFile != "" {
		t, err := readToken(*tokenFile)
		if err != nil {
			log.Fatal(err)
		}
		token = t
	}
	v := &verifier{delay: time.Duration(*delayMs) * time.Millisecond}
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		v.log = f
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		log.Fatalf("cannot listen on %s:%d: %v", *host, *port, err)
	}
	s, hs := newServer(v, token)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-stop
		log.Printf("%v: stopping", sig)
		hs.Shutdown() // NOT_SERVING: cohort-reward takes the endpoint out of rotation
		done := make(chan struct{})
		go func() { s.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.Stop()
		}
	}()

	auth := "no token"
	if token != "" {
		auth = "bearer token required"
	}
	log.Printf("serving tasks %s on %s (%s)", strings.Join(Tasks, ", "), lis.Addr(), auth)
	if err := s.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
