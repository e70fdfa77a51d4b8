import type { Verdict } from "../check/verdict.ts";
import type { Key } from "./keys.ts";
import { screenRows } from "./term.ts";

/** What a screen of the guided runner reacts to. */
export type UiEvent =
  | { kind: "key"; key: Key }
  /** The learner's file was saved. */
  | { kind: "saved" }
  /** A check run finished; `run` tells a stale result from the latest one. */
  | { kind: "checked"; run: number; verdict: Verdict }
  | { kind: "resize" };

export const isKey = (event: UiEvent): event is Extract<UiEvent, { kind: "key" }> =>
  event.kind === "key";

const CLEAR = "\x1b[H\x1b[2J";

/** Replaces the whole screen with `lines` (the runner redraws rather than scrolls). */
export function draw(lines: string[], footer: string[] = []): void {
  const rows = screenRows();
  let text = CLEAR + lines.join("\n");
  if (footer.length > 0) {
    // The footer sits on the last rows, so keys are always in the same place.
    text += `\x1b[${Math.max(rows - footer.length + 1, lines.length + 1)};1H${footer.join("\n")}`;
  }
  process.stdout.write(text);
}
