/** A dashboard's Server-Sent Events stream, read the way a tab reads it. */
import { request } from "node:http";

export interface Seen {
  event: string;
  data: unknown;
}

/** An open /events stream: `next(name)` resolves with the first event of that name. */
export function openEvents(port: number) {
  const seen: Seen[] = [];
  const waiting: { name: string; resolve: (event: Seen) => void }[] = [];
  const deliver = () => {
    for (const wait of [...waiting]) {
      const found = seen.find((e) => e.event === wait.name);
      if (found) {
        waiting.splice(waiting.indexOf(wait), 1);
        wait.resolve(found);
      }
    }
  };
  const req = request({ host: "127.0.0.1", port, path: "/events" }, (res) => {
    let buffer = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      buffer += chunk;
      const blocks = buffer.split("\n\n");
      buffer = blocks.pop() ?? "";
      for (const block of blocks) {
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) seen.push({ event, data: JSON.parse(data) });
      }
      deliver();
    });
  });
  req.on("error", () => {});
  req.end();
  return {
    next: (name: string) =>
      new Promise<Seen>((resolve) => {
        waiting.push({ name, resolve });
        deliver();
      }),
    /** Every event received so far, in order. */
    seen,
    close: () => req.destroy(),
  };
}
