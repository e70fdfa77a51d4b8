import kleur from "kleur";
import type { Inbox, Key } from "./keys.ts";
import { draw, isKey, type UiEvent } from "./screen.ts";
import { screenRows, screenWidth, truncate } from "./term.ts";

/** Where the view starts after a key; undefined means close the pager. Pure, for the tests. */
export function scroll(top: number, key: Key, total: number, height: number): number | undefined {
  const last = Math.max(total - height, 0);
  const clamp = (n: number) => Math.min(Math.max(n, 0), last);
  if (key.char === "G") return last;
  switch (key.name) {
    case "q":
    case "escape":
      return undefined;
    case "space":
    case "pagedown":
    case "f":
      // Space on the last page closes, like `more`.
      return top >= last && key.name === "space" ? undefined : clamp(top + height - 1);
    case "return":
    case "enter":
    case "down":
    case "j":
      return top >= last && key.name !== "down" && key.name !== "j" ? undefined : clamp(top + 1);
    case "b":
    case "pageup":
      return clamp(top - (height - 1));
    case "up":
    case "k":
      return clamp(top - 1);
    case "g":
    case "home":
      return 0;
    case "end":
      return last;
    default:
      return top;
  }
}

/**
 * Shows `lines` a screen at a time until the learner closes it. Keys: space or ↓ for more,
 * b or ↑ back, q to close.
 */
export async function page(title: string, lines: string[], inbox: Inbox<UiEvent>): Promise<void> {
  let top = 0;
  for (;;) {
    const height = screenRows() - 1;
    const last = Math.max(lines.length - height, 0);
    top = Math.min(top, last);
    const end = Math.min(top + height, lines.length);
    const where =
      lines.length > height
        ? `${top + 1}-${end} of ${lines.length} (${Math.round((end / lines.length) * 100)}%)`
        : "";
    const keys = end < lines.length ? "space more · b back · q close" : "q close";
    // On a narrow screen the keys matter most: drop the position, then the title.
    const width = screenWidth();
    const fitting = [[title, where, keys], [title, keys], [keys]]
      .map((parts) => ` ${parts.filter(Boolean).join(" · ")} `)
      .find((text) => text.length <= width);
    const status = kleur.inverse(truncate(fitting ?? ` ${keys} `, width));
    draw(lines.slice(top, end), [status]);
    const event = await inbox.take((e) => isKey(e) || e.kind === "resize");
    if (!isKey(event)) continue;
    const next = scroll(top, event.key, lines.length, height);
    if (next === undefined) return;
    top = next;
  }
}
