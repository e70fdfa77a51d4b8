"""A NER worker for the lesson 13 pipeline, in Python with redis-py.

It joins the "ner" stage beside the TypeScript workers and speaks only
the pipeline's protocol (the names in lesson 13's README): recover stale
work first, then new work; hand a document on exactly once (WATCH, then
one MULTI); dead-letter what keeps failing.

    python3 lessons/13-capstone-pipeline/ner_worker.py \\
        --url redis://127.0.0.1:6379

It stops after the step in hand on SIGTERM or Ctrl+C, and with
--stop-on-stdin-eof when its standard input closes: a parent that dies
then never leaves it behind.
"""

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time

import redis

STAGE, NEXT = "ner", "classify"
READY_LINE = "@@pipeline-worker-ready"

# The simulated NER service of src/pipeline/services.ts: the audit checks
# every result against it. re.ASCII: JavaScript's \b and \d are ASCII.
ENTITY_PATTERNS = [
    ("ORG", r"\b[A-Z][A-Za-z&]*(?: [A-Z][A-Za-z&]*)* "
            r"(?:Ltd|LLP|Inc|GmbH|plc|LLC|BV)\b"),
    ("PERSON", r"\b(?:Mr|Ms|Mrs|Dr)\.? [A-Z][a-z]+ [A-Z][a-z]+\b"),
    ("DATE", r"\b\d{4}-\d{2}-\d{2}\b"),
    ("MONEY", r"\b(?:EUR|USD|GBP) \d{1,3}(?:,\d{3})*(?:\.\d{2})?\b"),
]
ENTITY_RES = [
    (kind, re.compile(pattern, re.ASCII))
    for kind, pattern in ENTITY_PATTERNS
]
POISON_REASON = (
    "the NER model rejected the text: it exceeds the context window"
)


def to_json(value):
    """JSON as JavaScript's JSON.stringify writes it: the audit compares
    the exact text."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def ner(text):
    """Organisations, people, dates and amounts, in order of appearance,
    each once."""
    # Sorted by position only: a tie keeps the patterns' order, as in JS.
    found = sorted(
        ((m.start(), kind, m.group(0))
         for kind, rx in ENTITY_RES
         for m in rx.finditer(text)),
        key=lambda f: f[0])
    seen, entities = set(), []
    for _, kind, match in found:
        if (kind, match) not in seen:
            seen.add((kind, match))
            entities.append({"type": kind, "text": match})
    return {"entities": entities}


class ServiceError(Exception):
    """The NER service failed for this document."""


class Worker:
    def __init__(self, r, args):
        self.r = r
        self.prefix = args.prefix
        self.me = args.consumer
        self.claim_idle_ms = args.claim_idle_ms
        self.block_ms = args.block_ms
        self.max_deliveries = args.max_deliveries
        self.latency_ms = args.latency_ms
        self.stream = f"{self.prefix}stage:{STAGE}"
        self.next = f"{self.prefix}stage:{NEXT}"
        self.stop = threading.Event()

    def key(self, name):
        return f"{self.prefix}{name}"

    def stat(self, what):
        self.r.hincrby(self.key("stats"), f"{STAGE}:{what}", 1)

    def next_work(self):
        """(entry id, doc, deliveries): stale work first, then new work."""
        # XAUTOCLAIM examines at most COUNT x 10 pending entries per call:
        # follow its cursor to 0-0, or entries further down are never
        # recovered; new work only when nothing is left to recover.
        cursor = "0-0"
        while True:
            cursor, claimed, *_ = self.r.xautoclaim(
                self.stream, STAGE, self.me, self.claim_idle_ms,
                start_id=cursor, count=1)
            claimed = [entry for entry in claimed if entry]
            if claimed:
                entry_id, fields = claimed[0]
                pending = self.r.xpending_range(
                    self.stream, STAGE, entry_id, entry_id, 1)
                n = pending[0]["times_delivered"] if pending else 2
                return entry_id, fields["doc"], n
            if cursor == "0-0":
                break
        reply = self.r.xreadgroup(
            STAGE, self.me, {self.stream: ">"}, count=1, block=self.block_ms)
        if not reply or not reply[0][1]:
            return None
        entry_id, fields = reply[0][1][0]
        return entry_id, fields["doc"], 1

    def commit_once(self, doc, entry_id, build):
        """Runs build(tx) in one MULTI, once per document and stage."""
        doc_key = self.key(f"doc:{doc}")
        with self.r.pipeline() as tx:
            try:
                tx.watch(doc_key)
                done, dead = tx.hmget(doc_key, [STAGE, "dead"])
                if done is not None or dead is not None:  # finished or given up
                    tx.unwatch()
                    self.r.xack(self.stream, STAGE, entry_id)
                    return False
                tx.multi()
                build(tx)
                tx.execute()
                return True
            except redis.WatchError:
                return False  # still pending: claimed again later

    def broadcast(self, tx, event):
        text = to_json(event)
        tx.hset(self.key("status"), event["doc"], text)
        tx.publish(self.key("events"), text)

    def hand_off(self, doc, entry_id, result):
        def build(tx):
            tx.hset(self.key(f"doc:{doc}"), STAGE, result)
            tx.xadd(self.next, {"doc": doc})
            tx.xack(self.stream, STAGE, entry_id)
            self.broadcast(tx, {"doc": doc, "stage": STAGE,
                                "state": "done", "at": now_ms()})

        return self.commit_once(doc, entry_id, build)

    def dead_letter(self, doc, entry_id, deliveries, reason):
        def build(tx):
            # The marker commit_once() looks for: no second letter.
            tx.hset(self.key(f"doc:{doc}"), "dead", STAGE)
            tx.xadd(self.key("dead"), {
                "doc": doc, "stage": STAGE, "reason": reason,
                "entry": entry_id, "deliveries": str(deliveries)})
            tx.xack(self.stream, STAGE, entry_id)
            self.broadcast(tx, {"doc": doc, "stage": STAGE,
                                "state": "dead", "at": now_ms(),
                                "reason": reason})

        if self.commit_once(doc, entry_id, build):
            self.stat("dead")

    def call_service(self, fields):
        if self.latency_ms > 0:
            time.sleep(self.latency_ms * (0.5 + random.random()) / 1000)
        if "[[poison:ner]]" in fields.get("text", ""):
            raise ServiceError(POISON_REASON)
        if "ocr" not in fields:
            raise ServiceError("the document has no ocr result yet")
        return to_json(ner(json.loads(fields["ocr"])["text"]))

    def handle(self, entry_id, doc, deliveries):
        """The policy of src/pipeline/stage-loop.ts, but for its
        simulated crash."""
        if deliveries > 1:
            self.stat("retried")
        errors, field = self.key("errors"), f"{doc}:{STAGE}"
        if deliveries > self.max_deliveries:
            why = self.r.hget(errors, field) or (
                "no worker finished it: each one stopped or crashed")
            self.dead_letter(doc, entry_id, deliveries, (
                f"gave up at {STAGE} after {deliveries - 1} "
                f"deliveries: {why}"))
            return
        fields = self.r.hgetall(self.key(f"doc:{doc}"))
        try:
            result = self.call_service(fields)
        except ServiceError as error:
            self.r.hset(errors, field, str(error))
            self.stat("failed")
            if deliveries >= self.max_deliveries:
                self.dead_letter(doc, entry_id, deliveries, (
                    f"gave up at {STAGE} after {deliveries} "
                    f"deliveries: {error}"))
            return  # else it stays pending and is claimed again: a retry
        if self.hand_off(doc, entry_id, result):
            self.stat("done")
            self.stat("done:python")

    def run(self):
        while not self.stop.is_set():
            try:
                work = self.next_work()
                if work:
                    self.handle(*work)
            except redis.RedisError as error:  # Redis restarting, say
                print(f"{self.me}: {error}", file=sys.stderr, flush=True)
                self.stop.wait(0.25)


def tls_options(url):
    """rediss://: verified as the workbook's TypeScript clients verify it,
    with the CA in REDIS_CA. redis-py checks the certificate against the
    URL's host and cannot be given another name: with REDIS_TLS_SERVERNAME
    set (a relay, a tunnel) only the CA's signature is checked."""
    if not url.startswith("rediss:"):
        return {}
    options = {"ssl_cert_reqs": "required",
               "ssl_check_hostname": not os.environ.get("REDIS_TLS_SERVERNAME")}
    if os.environ.get("REDIS_CA"):
        options["ssl_ca_certs"] = os.environ["REDIS_CA"]
    return options


def now_ms():
    return int(time.time() * 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The pipeline passes the URL in the environment: `ps` shows a command line, password too.
    parser.add_argument("--url", default=os.environ.get(
        "PIPELINE_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--prefix", default="pipeline:")
    parser.add_argument("--consumer", default="ner-py-1")
    parser.add_argument("--claim-idle-ms", type=int, default=1500)
    parser.add_argument("--block-ms", type=int, default=500)
    parser.add_argument("--max-deliveries", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    args = parser.parse_args()

    r = redis.Redis.from_url(args.url, decode_responses=True,
                             client_name=f"{args.prefix}{args.consumer}",
                             **tls_options(args.url))
    r.ping()
    worker = Worker(r, args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())

    def stop_at_eof():
        while sys.stdin.buffer.read(4096):
            pass
        worker.stop.set()

    if args.stop_on_stdin_eof:
        threading.Thread(target=stop_at_eof, daemon=True).start()
    print(READY_LINE, flush=True)
    worker.run()


if __name__ == "__main__":
    main()
