import { expect, test } from "vitest";
import { STAGES } from "../../src/pipeline/keys.ts";
import {
  overallRate,
  renderPlain,
  renderSnapshot,
  type Snapshot,
  trimHistory,
  windowRates,
} from "../../src/pipeline/view.ts";

const rows = STAGES.map((stage) => ({
  stage,
  queued: 0,
  inProgress: 0,
  done: 200,
  retried: 0,
  dead: stage === "ner" ? 4 : 0,
  rate: 0.5,
}));
const end: Snapshot = {
  elapsedMs: 3_000,
  rows,
  submitted: 200,
  accepted: 200,
  workersAlive: 4,
  workersTotal: 4,
  redis: "up",
  kills: 0,
  restarts: 0,
};

test("the per-stage rate is labelled as recent, not as the run's", () => {
  expect(renderSnapshot(end)[0]).toContain("docs/s last 5 s");
});

test("the last picture shows the whole run's rate beside the recent one", () => {
  const rate = overallRate(rows, 3_000);
  // 200 completed and 4 dead-lettered in 3 s, as the audit counts them.
  expect(rate).toBeCloseTo(68);
  const lines = renderSnapshot({ ...end, overallRate: rate });
  expect(lines.at(-1)).toBe("whole run: 68.0 docs/s over 3.0 s");
  expect(renderPlain({ ...end, overallRate: rate })).toContain("whole run: 68.0 docs/s");
  expect(renderSnapshot(end).join("\n")).not.toContain("whole run");
});

test("the recent rate spans the last 5 s of readings, not one interval", () => {
  const readings = [0, 1000, 2000, 6000, 7000].map((at, i) => ({ at, done: [i * 10] }));
  const kept = trimHistory(readings);
  // The reading at 2000 is the last one at or before the window's start (7000 - 5000).
  expect(kept.map((r) => r.at)).toEqual([2000, 6000, 7000]);
  expect(windowRates(kept)).toEqual([4]);
  expect(windowRates(kept.slice(0, 1))).toEqual([0]);
});
