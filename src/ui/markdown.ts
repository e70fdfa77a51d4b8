/**
 * Lesson text (Markdown) as terminal lines no wider than `width`: headings, paragraphs, lists,
 * code blocks, tables and links. marked only parses; the layout is ours, so it follows kleur
 * (NO_COLOR) and the 80-column rule.
 */
import kleur from "kleur";
import { marked, type Token, type Tokens } from "marked";
import { hardWrap, link, visibleLength, wrapLine } from "./term.ts";

const ENTITIES: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&#39;": "'",
  "&nbsp;": " ",
};

function decode(text: string): string {
  return text.replace(/&(?:amp|lt|gt|quot|#39|nbsp);/g, (entity) => ENTITIES[entity] ?? entity);
}

/** Inline tokens (text, **strong**, `code`, links, ...) as one styled string. */
function inline(tokens: Token[] | undefined, fallback = ""): string {
  if (!tokens) return decode(fallback);
  return tokens
    .map((token) => {
      switch (token.type) {
        case "strong":
          return kleur.bold(inline(token.tokens, token.text));
        case "em":
          return kleur.italic(inline(token.tokens, token.text));
        case "del":
          return kleur.strikethrough(inline(token.tokens, token.text));
        case "codespan": {
          const code = decode(token.text).replace(/\n/g, " ");
          // Without colour, the backticks are what sets code apart from prose.
          return kleur.enabled ? kleur.cyan(code) : `\`${code}\``;
        }
        case "br":
          return "\n";
        case "link": {
          const text = inline(token.tokens, token.text);
          const href = (token as Tokens.Link).href;
          const shown = href === token.text || href.startsWith("#") ? text : `${text} (${href})`;
          return link(kleur.underline(shown), href);
        }
        case "image":
          return `[image: ${decode(token.text)}]`;
        case "html":
          // A terminal shows no HTML: `<db>` in `__keyevent@<db>__` is a placeholder to read.
          return decode(token.raw);
        case "text":
        case "escape":
          // A line break inside a paragraph is a space; only "br" breaks the line.
          return "tokens" in token && token.tokens
            ? inline(token.tokens)
            : decode(token.text).replace(/\n/g, " ");
        default:
          return "raw" in token ? decode(String(token.raw)) : "";
      }
    })
    .join("");
}

/** Wraps a styled paragraph: `first` prefixes the first line, `rest` the following ones. */
function paragraph(text: string, width: number, first = "", rest = first): string[] {
  return text.split("\n").flatMap((line, i) => {
    const lead = i === 0 ? first : rest;
    return wrapLine(`${lead}${line.trim()}`, width, rest);
  });
}

function codeBlock(token: Tokens.Code, width: number): string[] {
  const gutter = kleur.dim("│ ");
  const lines = token.text.replace(/\n$/, "").split("\n");
  return lines.flatMap((line) =>
    hardWrap(line, Math.max(width - 4, 10), "↪").map(
      (piece) => `  ${gutter}${kleur.yellow(piece)}`,
    ),
  );
}

function list(token: Tokens.List, width: number, depth: number): string[] {
  const out: string[] = [];
  const start = typeof token.start === "number" ? token.start : 1;
  token.items.forEach((item, i) => {
    const bullet = token.ordered ? `${start + i}.` : depth % 2 === 0 ? "•" : "◦";
    const marker = `${bullet} `;
    const pad = " ".repeat(marker.length);
    let first = true;
    for (const child of item.tokens) {
      if (child.type === "text" || child.type === "paragraph") {
        const text = inline((child as Tokens.Text).tokens, child.text);
        out.push(...paragraph(text, width, first ? marker : pad, pad));
      } else if (child.type !== "space") {
        const inner = blocks([child], width - pad.length, depth + 1);
        out.push(...inner.map((line) => (line ? `${pad}${line}` : line)));
      }
      first = false;
    }
    if (token.loose && i < token.items.length - 1) out.push("");
  });
  return out;
}

/** Column widths that fit `width`, shrinking the widest column first. */
function columnWidths(rows: string[][], width: number): number[] {
  const count = Math.max(...rows.map((row) => row.length));
  const widths = Array.from({ length: count }, (_, c) =>
    Math.max(3, ...rows.map((row) => visibleLength(row[c] ?? ""))),
  );
  const budget = width - 2 - 3 * (count - 1);
  while (widths.reduce((a, b) => a + b, 0) > budget) {
    const widest = widths.indexOf(Math.max(...widths));
    if ((widths[widest] ?? 0) <= 6) break;
    widths[widest] = (widths[widest] ?? 0) - 1;
  }
  return widths;
}

function table(token: Tokens.Table, width: number): string[] {
  const header = token.header.map((cell) => inline(cell.tokens, cell.text));
  const body = token.rows.map((row) => row.map((cell) => inline(cell.tokens, cell.text)));
  const widths = columnWidths([header, ...body], width);
  const render = (cells: string[], style: (s: string) => string) => {
    const wrapped = widths.map((w, c) => wrapLine(cells[c] ?? "", w, ""));
    const height = Math.max(...wrapped.map((lines) => lines.length));
    const lines: string[] = [];
    for (let r = 0; r < height; r++) {
      const parts = widths.map((w, c) => {
        const text = wrapped[c]?.[r] ?? "";
        return style(text) + " ".repeat(Math.max(w - visibleLength(text), 0));
      });
      lines.push(`  ${parts.join(kleur.dim(" │ "))}`.trimEnd());
    }
    return lines;
  };
  const separator = `  ${widths.map((w) => kleur.dim("─".repeat(w))).join(kleur.dim("─┼─"))}`;
  return [
    ...render(header, (s) => kleur.bold(s)),
    separator,
    ...body.flatMap((row) => render(row, (s) => s)),
  ];
}

function blocks(tokens: Token[], width: number, depth = 0): string[] {
  const out: string[] = [];
  const gap = () => {
    if (out.length > 0 && out[out.length - 1] !== "") out.push("");
  };
  for (const token of tokens) {
    switch (token.type) {
      case "space":
        break;
      case "heading": {
        gap();
        const text = inline(token.tokens, token.text);
        const depthOf = (token as Tokens.Heading).depth;
        const styled =
          depthOf === 1
            ? kleur.bold().cyan(text)
            : depthOf === 2
              ? kleur.bold().cyan(text)
              : kleur.bold(text);
        out.push(...paragraph(styled, width));
        if (depthOf === 1) out.push(kleur.cyan("═".repeat(Math.min(visibleLength(text), width))));
        if (depthOf === 2) out.push(kleur.dim("─".repeat(Math.min(visibleLength(text), width))));
        out.push("");
        break;
      }
      case "paragraph":
      case "text":
        gap();
        out.push(...paragraph(inline((token as Tokens.Paragraph).tokens, token.text), width));
        break;
      case "code":
        gap();
        out.push(...codeBlock(token as Tokens.Code, width));
        out.push("");
        break;
      case "list":
        gap();
        out.push(...list(token as Tokens.List, width, depth));
        break;
      case "blockquote": {
        gap();
        const inner = blocks((token as Tokens.Blockquote).tokens, width - 2, depth);
        out.push(...inner.map((line) => `${kleur.dim("▌")} ${kleur.italic(line)}`.trimEnd()));
        break;
      }
      case "table":
        gap();
        out.push(...table(token as Tokens.Table, width));
        out.push("");
        break;
      case "hr":
        gap();
        out.push(kleur.dim("─".repeat(width)), "");
        break;
      case "html":
        // Comments are notes for authors; any other "HTML" is text meant to be read.
        if (!/^\s*<!--[\s\S]*-->\s*$/.test(token.raw)) {
          gap();
          out.push(...paragraph(decode(token.raw.trim()), width));
        }
        break;
      default:
        if ("text" in token && typeof token.text === "string") {
          gap();
          out.push(...paragraph(decode(token.text), width));
        }
    }
  }
  return out;
}

/** Renders Markdown to lines of at most `width` visible columns. */
export function renderMarkdown(markdown: string, width: number): string[] {
  const lines = blocks(marked.lexer(markdown), width);
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}
