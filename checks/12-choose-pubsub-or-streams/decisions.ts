import type { Choice } from "./hybrid-support.ts";

/** The decision for each scenario, and the question that leads to it when it is wrong. */
export const DECISIONS: Record<string, { answer: Choice; why: string }> = {
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
