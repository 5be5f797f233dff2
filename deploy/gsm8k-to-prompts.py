#!/usr/bin/env python3
"""gsm8k-to-prompts.py - turn GSM8K into a Cohort prompt file for the `math` verifier.

    python3 deploy/gsm8k-to-prompts.py ../shared/testdata/gsm8k/train.jsonl -o gsm8k-train.jsonl

Reads GSM8K's JSON Lines ({"question": ..., "answer": "worked solution ... #### 18"}) and
writes one prompt per problem:

    {"messages": [{"role": "user", "content": QUESTION}], "prompt": QUESTION,
     "task": "math", "answer": "18"}

"messages" is what a chat model sees (the learner renders it with the model's chat template);
"prompt" is the same question as raw text, for base models. "answer" is the number after the
last "####" of the solution, stripped, with its thousands separators removed ("1,450,000" ->
"1450000"); a solution without one, or whose final answer is not a number, stops the
conversion with the line named. Blank lines are skipped. Output goes to -o FILE, or stdout.
--suffix TEXT appends TEXT to every question (e.g. an instruction on the answer format).
Python 3 standard library only.
"""
import argparse
import json
import os
import re
import sys

NUMBER = re.compile(r"-?\d+(\.\d+)?(/\d+)?")


def final_answer(solution):
    """The number after the last '####' with commas removed, or None."""
    if "####" not in solution:
        return None
    ans = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return ans if NUMBER.fullmatch(ans) else None


def convert(src, out, path, suffix):
    n = 0
    for lineno, line in enumerate(src, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            question, solution = obj["question"], obj["answer"]
            if not isinstance(question, str) or not isinstance(solution, str):
                raise TypeError("question and answer must be strings")
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"gsm8k-to-prompts: {path} line {lineno}: not a GSM8K record "
                     f"({{\"question\": ..., \"answer\": ...}}): {e}")
        answer = final_answer(solution)
        if answer is None:
            sys.exit(f"gsm8k-to-prompts: {path} line {lineno}: the answer has no number "
                     f"after '####'")
        text = question + suffix
        rec = {"messages": [{"role": "user", "content": text}], "prompt": text,
               "task": "math", "answer": answer}
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(
        description="Convert GSM8K JSON Lines into a Cohort prompt file (task \"math\").")
    ap.add_argument("input", help="GSM8K file, e.g. ../shared/testdata/gsm8k/test.jsonl")
    ap.add_argument("-o", "--output", help="prompt file to write (default: stdout)")
    ap.add_argument("--suffix", default="",
                    help="text appended to every question (default: none)")
    args = ap.parse_args()
    try:
        src = open(args.input, encoding="utf-8")
    except OSError as e:
        sys.exit(f"gsm8k-to-prompts: cannot read {args.input}: {e.strerror}")
    with src:
        if args.output:
            tmp = args.output + ".tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as out:
                    n = convert(src, out, args.input, args.suffix)
            except SystemExit:
                os.unlink(tmp)
                raise
            os.replace(tmp, args.output)
        else:
            out = open(sys.stdout.fileno(), "w", encoding="utf-8", closefd=False)
            with out:
                n = convert(src, out, args.input, args.suffix)
    print(f"gsm8k-to-prompts: {n} prompts from {args.input}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
