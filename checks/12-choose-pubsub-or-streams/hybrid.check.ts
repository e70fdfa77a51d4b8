import { describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  eventually,
  fail,
  key,
  learnerClient,
  loadExercise,
  type Redis,
  sleep,
} from "../kit.ts";
import { pendingCount } from "../streams-support.ts";

type Choice = "pubsub" | "streams" | "both";
interface HybridKeys {
  tasks: string;
  group: string;
  progress: string;
  state: string;
}
interface Progress {
  doc: string;
  state: "queued" | "processing" | "done";
  worker?: string;
}
interface Exercise {
  SCENARIOS: Record<string, string>;
  choose(scenario: string): Choice;
  createGroup(client: Redis, keys: HybridKeys): Promise<void>;
  submitTask(client: Redis, keys: HybridKeys, doc: string): Promise<string>;
  workOnce(
    client: Redis,
    keys: HybridKeys,
    consumer: string,
    ocr: (doc: string) => Promise<void>,
    blockMs: number,
  ): Promise<string | undefined>;
}

const exercise = await loadExercise<Exercise>("choose", "createGroup", "submitTask", "workOnce");

/** The decision for each scenario, and the question that leads to it when it is wrong. */
const DECISIONS: Record<string, { answer: Choice; why: string }> = {
  "page-redaction": {
    answer: "streams",
    why: "If the redaction workers are restarting when a page arrives, is the page lost? With four workers listening, how many redact it? Work that must be done once, by one of several workers, even after downtime, belongs on a stream read by a consumer group.",
  },
  "typing-indicator": {
    answer: "pubsub",
    why: "Who needs an update that is a second old? A missed one is replaced by the next; nobody should process it later. Live, throwaway news for whoever is listening now is what pub/sub is for.",
  },
  "reload-prompts": {
    answer: "pubsub",
    why: "Every instance must hear it (a consumer group would give it to one only), and an instance that is down does not need it later: it loads the templates when it starts. A broadcast to everyone listening now is pub/sub.",
  },
  "billing-usage": {
    answer: "streams",
    why: "The billing service is down for an hour: where does the usage wait meanwhile? And who makes sure each page is billed once? A stream keeps it until a consumer group member acknowledges it.",
  },
  "compliance-replay": {
    answer: "streams",
    why: "Auditors read last quarter's changes, long after they happened. Pub/sub keeps nothing once it is delivered; a stream is an append-only log you can read again with XRANGE.",
  },
  "bulk-upload-progress": {
    answer: "both",
    why: "Two different needs: 500 contracts that must each be processed even if a worker crashes, and a browser that wants to hear about progress now. The work goes on a stream, the progress on pub/sub.",
  },
  "reindex-after-model-change": {
    answer: "streams",
    why: "Two million documents, a fleet of workers, crashes along the way: work shared out once each and resumed after a crash is a consumer group's job.",
  },
  "paralegal-inbox": {
    answer: "both",
    why: "One paralegal must take the filing (and it must wait if nobody is on call yet), and every screen should flash now. Taking work once is a stream with a consumer group; flashing every screen is pub/sub.",
  },
};

describe("part 1: choose", () => {
  test("each situation gets pub/sub, Streams or both, for the right reason", async () => {
    const scenarios = Object.keys(exercise.SCENARIOS ?? {});
    check(
      scenarios.length === Object.keys(DECISIONS).length,
      "Your file should still export SCENARIOS with all eight situations: restore it with `npm run reset -- 12` if you changed it.",
    );
    const wrong: string[] = [];
    for (const scenario of Object.keys(DECISIONS)) {
      const decision = DECISIONS[scenario];
      if (!decision) continue;
      const chosen = await call(`choose("${scenario}")`, () => exercise.choose(scenario));
      if (!["pubsub", "streams", "both"].includes(String(chosen))) {
        fail(
          `choose("${scenario}") returned ${JSON.stringify(chosen)}; it must return "pubsub", "streams" or "both".`,
        );
      }
      if (chosen !== decision.answer) {
        wrong.push(`- ${scenario}: you chose "${chosen}". ${decision.why}`);
      }
    }
    check(
      wrong.length === 0,
      `${wrong.length} of ${scenarios.length} decisions need another look:\n${wrong.join("\n")}`,
      1,
    );
  });
});

function hybridKeys(name: string): HybridKeys {
  return {
    tasks: key(`${name}:ocr:tasks`),
    group: "ocr",
    progress: key(`${name}:ocr:progress`),
    state: key(`${name}:ocr:state`),
  };
}

/** Progress events on `channel` from now on; anything that is not JSON is kept as text. */
async function listen(channel: string): Promise<{ events: Progress[]; bad: string[] }> {
  const heard = { events: [] as Progress[], bad: [] as string[] };
  const subscriber = await checkClient("progress");
  await subscriber.subscribe(channel, (message) => {
    try {
      heard.events.push(JSON.parse(message) as Progress);
    } catch {
      heard.bad.push(message);
    }
  });
  return heard;
}

describe("part 2: the hybrid", () => {
  test("createGroup() can be called by every worker that starts", async () => {
    const keys = hybridKeys("group");
    const client = await learnerClient();
    await call("createGroup()", () => exercise.createGroup(client, keys));
    await call("createGroup() a second time", () => exercise.createGroup(client, keys));
    const c = await checkClient();
    const groups = await c.xInfoGroups(keys.tasks);
    check(
      groups.some((g) => String((g as { name?: unknown }).name) === "ocr"),
      `There is no group "ocr" on ${keys.tasks}: XGROUP CREATE <stream> ocr 0 MKSTREAM.`,
      2,
    );
  });

  test("tasks wait on a stream, progress goes out on pub/sub, the latest state sits in a hash", async () => {
    const keys = hybridKeys("hybrid");
    const c = await checkClient();
    const { events, bad } = await listen(keys.progress);
    const client = await learnerClient();
    await call("createGroup()", () => exercise.createGroup(client, keys));
    const docs = Array.from({ length: 12 }, (_, i) => `doc-${i + 1}`);

    // No worker is running yet: the tasks must wait for them.
    for (const doc of docs) {
      await call(`submitTask("${doc}")`, () => exercise.submitTask(client, keys, doc));
    }
    const queued = await c.xLen(keys.tasks);
    check(
      queued === 12,
      `After 12 submitTask() calls with no worker running, the task stream ${keys.tasks} holds ${queued} entries. A task published on a channel while no worker listens is lost; XADD it to the stream, where it waits.`,
      2,
    );
    check(
      bad.length === 0,
      `A progress event is not JSON: ${bad[0]}. Publish JSON.stringify(event).`,
      2,
    );
    await eventually(
      () => events.filter((e) => e.state === "queued").length >= 12,
      2000,
      `Dashboards should hear about each queued task on ${keys.progress}: ${events.length} progress events arrived for 12 submissions. PUBLISH { doc, state: "queued" } as JSON.`,
      2,
    );
    check(
      (await c.hGet(keys.state, "doc-1")) === "queued",
      `Before any worker ran, the latest state of doc-1 in ${keys.state} should be "queued"; it is ${JSON.stringify(await c.hGet(keys.state, "doc-1"))}. HSET it, so a dashboard that opens later knows too.`,
      2,
    );

    // Three workers share the work; each call to workOnce() handles at most one task.
    const handled: { doc: string; worker: string }[] = [];
    const workers = await Promise.all(["ocr-1", "ocr-2", "ocr-3"].map(() => learnerClient()));
    const deadline = Date.now() + 8000;
    await Promise.all(
      workers.map(async (worker, i) => {
        const name = `ocr-${i + 1}`;
        while (new Set(handled.map((h) => h.doc)).size < 12 && Date.now() < deadline) {
          await call(`workOnce() as ${name}`, () =>
            exercise.workOnce(
              worker,
              keys,
              name,
              async (doc) => {
                handled.push({ doc, worker: name });
                await sleep(20);
              },
              100,
            ),
          );
          if (handled.length > 60) break;
        }
      }),
    );
    for (const doc of docs) {
      const times = handled.filter((h) => h.doc === doc).length;
      check(
        times === 1,
        `${doc} was OCRed ${times} times by ${[...new Set(handled.filter((h) => h.doc === doc).map((h) => h.worker))].join(", ") || "nobody"}. Workers of one consumer group share the tasks: read with XREADGROUP GROUP <group> <consumer> ... ">" so each task goes to exactly one of them.`,
        2,
      );
    }
    check(
      new Set(handled.map((h) => h.worker)).size >= 2,
      `Only ${handled[0]?.worker} did any work: each worker reads as its own consumer name.`,
      2,
    );
    const pending = await pendingCount(c, keys.tasks, keys.group);
    check(
      pending === 0,
      `${pending} tasks are still pending after they were done: XACK each one, or a restarted worker does it again.`,
      2,
    );
    const states = await c.hGetAll(keys.state);
    const notDone = docs.filter((doc) => states[doc] !== "done");
    check(
      notDone.length === 0,
      `The latest state of ${notDone.join(", ")} in ${keys.state} is not "done" (it is ${JSON.stringify(states[notDone[0] ?? ""])}). HSET the state as the task moves on.`,
      2,
    );
    await eventually(
      () => events.filter((e) => e.state === "done").length >= 12,
      2000,
      `${events.filter((e) => e.state === "done").length} "done" progress events arrived for 12 tasks: PUBLISH one per task when it is finished.`,
      2,
    );
    for (const doc of docs) {
      const seen = events.filter((e) => e.doc === doc).map((e) => e.state);
      check(
        seen.join(" > ") === "queued > processing > done",
        `The progress events for ${doc} arrived as ${seen.join(" > ") || "nothing"}; expected queued > processing > done.`,
        2,
      );
    }
    const processing = events.find((e) => e.state === "processing");
    check(
      typeof processing?.worker === "string" && processing.worker.startsWith("ocr-"),
      `A "processing" event should name the worker ({ doc, state: "processing", worker: consumer }); got ${JSON.stringify(processing)}.`,
      2,
    );
  });
});
