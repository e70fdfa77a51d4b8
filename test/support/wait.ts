import { setTimeout as sleep } from "node:timers/promises";

/** Polls `condition` every 100 ms until it holds or `ms` pass; the last answer is the result. */
export async function waitFor(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await sleep(100);
  }
  return condition();
}
