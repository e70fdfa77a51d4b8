import { runCapstone } from "./capstone-run.ts";

const r = await runCapstone(500, true);
r.endToEndMs.sort((a, b) => a - b);
console.log(
  r.audit.docsPerSecond,
  r.endToEndMs.length,
  r.endToEndMs[Math.floor(r.endToEndMs.length / 2)],
  r.endToEndMs.at(-1),
);
console.log(
  [...(r.commandsPerDoc ?? [])].sort((a, b) => b[1] - a[1]),
  [...(r.commandsPerDoc ?? []).values()].reduce((a, b) => a + b, 0),
);
