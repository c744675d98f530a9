"""A GRPO-style loop written against duel's TrainingService, in Python.

For each step: sample K completions per prompt from the session's current weights (Sample),
reward each with a rule (here: the share of its tokens that are TARGET), turn rewards into
group-relative advantages (reward minus the prompt's mean, over the prompt's standard deviation),
and train on them with the importance_sampling loss (ForwardBackward with the sampler's
log-probs), then OptimStep. Every mutating call carries seq 1, 2, 3 ...; a call that fails with
UNAVAILABLE (the trainer restarting) is sent again with the same seq, which the trainer applies
once.

Stubs come from proto/ through protoc (see run.sh); nothing here is duel-specific but the proto.
"""

import argparse
import statistics
import sys
import time

import grpc

from duel.v1 import common_pb2, training_pb2, training_pb2_grpc

TARGET = 7


def reward(tokens):
    return sum(1 for t in tokens if t == TARGET) / max(1, len(tokens))


class Session:
    """A session handle that numbers its mutating calls and retries them with the same seq."""

    def __init__(self, stub, session_id):
        self.stub, self.id, self.seq = stub, session_id, 0

    def call(self, method, request, retry_for=60.0):
        start = time.monotonic()
        while True:
            try:
                return getattr(self.stub, method)(request, timeout=600)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - start > retry_for:
                    raise
                time.sleep(0.25)

    def mutate(self, method, request_type, **fields):
        answer = self.call(method, request_type(session_id=self.id, seq=self.seq + 1, **fields))
        self.seq += 1
        return answer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True)
    p.add_argument("--base-uri", required=True)
    p.add_argument("--base-sha256", required=True)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-2)
    args = p.parse_args()

    stub = training_pb2_grpc.TrainingServiceStub(grpc.insecure_channel(args.address))
    base = common_pb2.ModelRef(
        artifact=common_pb2.ArtifactRef(uri=args.base_uri, sha256=args.base_sha256), name="base"
    )
    created = stub.CreateSession(
        training_pb2.CreateSessionRequest(
            base=base,
            optimizer=common_pb2.OptimizerConfig(name="adamw", learning_rate=args.lr, grad_clip=1.0),
            client_token="python-grpo-example",
            seed=0,
        )
    )
    session = Session(stub, created.session_id)
    prompts = [[2, 3], [4, 5], [6, 8]]
    first = last = None
    for step in range(1, args.steps + 1):
        sampled = session.call(
            "Sample",
            training_pb2.TrainingServiceSampleRequest(
                session_id=session.id,
                prompts=[common_pb2.Prompt(token_ids=x) for x in prompts],
                sampling=common_pb2.SamplingParams(
                    num_samples=args.k, max_new_tokens=6, temperature=1.0, seed=step
                ),
            ),
        ).samples
        groups = {}
        for s in sampled:
            groups.setdefault(s.prompt_index, []).append(s)
        data, rewards = [], []
        for i, group in groups.items():
            rs = [reward(s.completion.token_ids) for s in group]
            mean, std = statistics.fmean(rs), statistics.pstdev(rs)
            rewards += rs
            for s, r in zip(group, rs):
                advantage = (r - mean) / (std + 1e-6)
                data.append(
                    training_pb2.TrainingDatum(
                        prompt_ids=prompts[i],
                        completion_ids=s.completion.token_ids,
                        advantages=[advantage] * len(s.completion.token_ids),
                        sampling_logprobs=s.completion.token_logprobs,
                    )
                )
        fb = session.mutate(
            "ForwardBackward", training_pb2.ForwardBackwardRequest, loss="importance_sampling", data=data
        )
        opt = session.mutate("OptimStep", training_pb2.OptimStepRequest)
        mean_reward = statistics.fmean(rewards)
        first = mean_reward if first is None else first
        last = mean_reward
        print(
            f"step {step:2d}/{args.steps}  mean reward {mean_reward:.3f}  loss {fb.loss:+.4f}  "
            f"optimizer step {opt.step}",
            flush=True,
        )
    saved = session.mutate("SaveWeights", training_pb2.SaveWeightsRequest, name="examples/python-grpo")
    print(f"weights: {saved.model.artifact.uri}", flush=True)
    stub.CloseSession(training_pb2.CloseSessionRequest(session_id=session.id))
    if not last > first:
        print(f"the mean reward did not rise ({first:.3f} -> {last:.3f})", file=sys.stderr)
        return 1
    print(f"mean reward {first:.3f} -> {last:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
