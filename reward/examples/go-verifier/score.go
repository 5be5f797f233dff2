package main

// score.go - the judging itself, free of gRPC: what a verifier written from this example
// replaces with its own task. Two tasks are served:
//
//	match   the completion should equal metadata {"target": "..."}; score = fraction of the
//	        target's characters matched in place (extra characters count against), passed =
//	        exact. The same rule as the Python example (reward/examples/python-verifier).
//	length  the completion should be metadata {"chars": N} characters long; score =
//	        1 - |len - N| / max(len, N) (1 when both are 0), passed = exactly N.
//
// Characters are Unicode code points, as in Python's len().

import (
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"
)

// Tasks lists the task names this verifier serves, in the order it prints them.
var Tasks = []string{"match", "length"}

// Verdict is one judgement: the fields of cohort.v1.VerifyReply.
type Verdict struct {
	Score   float64
	Passed  bool
	Details string
}

// UnknownTaskError says the task is not one of Tasks (the server answers NOT_FOUND).
type UnknownTaskError struct{ Task string }

func (e *UnknownTaskError) Error() string {
	return fmt.Sprintf("this verifier serves tasks match and length, not %q", e.Task)
}

// BadMetadataError says the item's metadata does not fit its task (INVALID_ARGUMENT).
type BadMetadataError struct{ Msg string }

func (e *BadMetadataError) Error() string { return e.Msg }

// ScoreMatch is the match rule: fraction of target characters equal in place.
func ScoreMatch(target, completion string) (float64, bool) {
	t, c := []rune(target), []rune(completion)
	if len(t) == 0 {
		if len(c) == 0 {
			return 1, true
		}
		return 0, false
	}
	same := 0
	for i := 0; i < len(t) && i < len(c); i++ {
		if t[i] == c[i] {
			same++
		}
	}
	return float64(same) / float64(max(len(t), len(c))), completion == target
}

// ScoreLength is the length rule: 1 - |len - want| / max(len, want).
func ScoreLength(want int, completion string) (float64, bool) {
	n := utf8.RuneCountInString(completion)
	if n == want {
		return 1, true
	}
	return 1 - math.Abs(float64(n-want))/float64(max(n, want)), false
}

// Judge scores one completion of a task given the item's metadata JSON ("" = {}).
func Judge(task, metadataJSON, completion string) (Verdict, error) {
	if task != "match" && task != "length" {
		return Verdict{}, &UnknownTaskError{task}
	}
	if metadataJSON == "" {
		metadataJSON = "{}"
	}
	var meta map[string]json.RawMessage
	if err := json.Unmarshal([]byte(metadataJSON), &meta); err != nil || meta == nil {
		return Verdict{}, &BadMetadataError{fmt.Sprintf("metadata is not a JSON object: %.80q", metadataJSON)}
	}
	switch task {
	case "match":
		var target string
		raw, ok := meta["target"]
		if !ok || json.Unmarshal(raw, &target) != nil {
			return Verdict{}, &BadMetadataError{`task match needs metadata {"target": "<string>"}`}
		}
		s, passed := ScoreMatch(target, completion)
		if passed {
			return Verdict{s, true, "exact"}, nil
		}
		return Verdict{s, false, fmt.Sprintf("%.2f of %q", s, target)}, nil
	default: // length
		var want float64
		raw, ok := meta["chars"]
		if !ok || json.Unmarshal(raw, &want) != nil || want < 0 || want > 1<<20 || want != math.Trunc(want) {
			return Verdict{}, &BadMetadataError{`task length needs metadata {"chars": <integer 0..1048576>}`}
		}
		s, passed := ScoreLength(int(want), completion)
		return Verdict{s, passed, fmt.Sprintf("%d chars, want %d",
			utf8.RuneCountInString(completion), int(want))}, nil
	}
}
