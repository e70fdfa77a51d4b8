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
