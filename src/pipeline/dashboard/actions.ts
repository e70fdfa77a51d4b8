/**
 * What the page's buttons do to the running pipeline: kill the worker holding the most entries
 * (so there is a recovery to watch: it is frozen with SIGSTOP, what it holds is read, and only a
 * worker caught holding something is killed, so a kill always leaves entries to claim), add a
 * worker, upload a poison document under a name the
 * user types (it reaches the page again as data: the page must show it as text).
 */
import type { IncomingMessage } from "node:http";
import { signalGroup } from "../../process-group.ts";
import { poisoned, sampleUpload, type Upload } from "../documents.ts";
import type { PipelineKeys } from "../keys.ts";
import type { Redis } from "../parts.ts";
import type { Supervisor } from "../supervisor.ts";
import { HttpError, readJson } from "./http.ts";
import { workerLabel } from "./partitions.ts";
import { type HeldEntry, heldBy, heldPerSlot } from "./recovery.ts";

export type Workers = Pick<Supervisor, "workers" | "alive" | "kill" | "addWorker">;

/** The worker process a log line is about: its slot, and its pid (a replacement has another). */
export type Who = { slot: string; pid?: number };

export interface ActionContext {
  supervisor: Workers;
  reader: Redis;
  keys: PipelineKeys;
  upload(upload: Upload): Promise<string>;
  note(text: string, who?: Who): void;
  /** The entries worker `pid` held when it was frozen, just before its SIGKILL. */
  heldAtKill(pid: number, entries: HeldEntry[]): void;
  named(id: string, name: string): void;
}

export type Action = (req: IncomingMessage) => Promise<unknown>;

export function pageActions(context: ActionContext): Record<string, Action> {
  const { supervisor, keys } = context;
  let poisonCount = 0;

  const kill: Action = async () => {
    const candidates = supervisor.alive().filter((w) => w.isReady);
    if (candidates.length === 0) throw new HttpError(409, "No worker is running right now.");
    // A moment's wait when none holds any entry (between two documents, or Redis restarting).
    let victim = candidates[0];
    for (let attempt = 0; attempt < 50 && victim; attempt++) {
      const slots = candidates.map((w) => w.slot);
      const held = await heldPerSlot(context.reader, keys, slots).catch(() => undefined);
      const [slot, count] = [...(held ?? [])].sort((a, b) => b[1] - a[1])[0] ?? ["", 0];
      victim = candidates.find((w) => w.slot === slot) ?? victim;
      if (count > 0 && victim && signalGroup(victim.pid, "SIGSTOP")) {
        const entries = await heldBy(context.reader, keys, victim.slot).catch(() => []);
        if (entries.length > 0) {
          context.heldAtKill(victim.pid, entries);
          break;
        }
        signalGroup(victim.pid, "SIGCONT");
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!victim) throw new HttpError(409, "No worker is running right now.");
    const who = { slot: victim.slot, pid: victim.pid };
    context.note(`killing worker ${victim.slot} (SIGKILL) from the page`, who);
    await supervisor.kill(victim.slot);
    return who;
  };

  const add: Action = async () => {
    const worker = supervisor.addWorker();
    const who = { slot: worker.slot, pid: worker.pid };
    context.note(`worker ${worker.slot} added from the page`, who);
    return who;
  };

  const poison: Action = async (req) => {
    const body = await readJson(req);
    const name = typeof body.name === "string" ? body.name.trim() : "";
    if (!name || name.length > 200) {
      throw new HttpError(422, "Give the document a name of 1 to 200 characters.");
    }
    // It fails at classification on every delivery: it shows the way to the dead letters.
    const text = poisoned(sampleUpload(poisonCount++), "classify").text;
    const id = await context.upload({ name, text }).catch((error: Error) => {
      throw new HttpError(409, error.message);
    });
    context.named(id, name);
    context.note(`poison document "${name}" uploaded as ${id}: it fails at classify`);
    return { id };
  };

  return { "/actions/kill": kill, "/actions/add": add, "/actions/poison": poison };
}

/**
 * One partition's actions per button press, in turn (a cluster run's partitions each have their
 * own workers): a kill goes on to the next partition when one has no worker to kill, and the
 * worker it answers with is named as the page names it, "<tag>/<slot>".
 */
export function spreadActions(
  perPartition: Record<string, Action>[],
  tags: string[],
): Record<string, Action> {
  if (perPartition.length === 1 && perPartition[0]) return perPartition[0];
  let next = 0;
  const spread =
    (path: string): Action =>
    async (req) => {
      let refusal: unknown;
      for (let tried = 0; tried < perPartition.length; tried++) {
        const i = next++ % perPartition.length;
        const action = perPartition[i]?.[path];
        if (!action) continue;
        try {
          const answer = (await action(req)) as { slot?: string };
          return answer?.slot === undefined
            ? answer
            : { ...answer, slot: workerLabel(tags[i] ?? "", answer.slot) };
        } catch (error) {
          // Only a kill may try elsewhere: an upload's body was read by the first attempt.
          if (!(error instanceof HttpError && error.status === 409 && path === "/actions/kill"))
            throw error;
          refusal = error;
        }
      }
      throw refusal ?? new HttpError(404, "No such action.");
    };
  return Object.fromEntries(Object.keys(perPartition[0] ?? {}).map((path) => [path, spread(path)]));
}
