/**
 * Sample uploads for the document platform: contracts, filings and letters, generated from a
 * number so that every run (and every test) can know each document's expected results.
 */
import type { Stage } from "./keys.ts";

export interface Upload {
  name: string;
  text: string;
}

const ORGS = [
  "Acme Legal LLP",
  "Contoso Ltd",
  "Northwind Traders Inc",
  "Fabrikam GmbH",
  "Tailspin Toys plc",
  "Woodgrove Bank BV",
  "Litware LLC",
  "Adventure Works Ltd",
];
const PEOPLE = [
  "Ms. Ana Silva",
  "Mr. Jonas Berg",
  "Dr. Mei Tanaka",
  "Mrs. Olivia Brown",
  "Mr. Kofi Mensah",
  "Ms. Lea Dubois",
];
const CURRENCIES = ["EUR", "USD", "GBP"];

function pick<T>(list: readonly T[], n: number): T {
  return list[n % list.length] as T;
}

function date(n: number): string {
  const month = String((n % 12) + 1).padStart(2, "0");
  const day = String((n % 27) + 1).padStart(2, "0");
  return `${2021 + (n % 5)}-${month}-${day}`;
}

function money(n: number): string {
  const amount = ((n * 7919) % 990_000) + 10_000;
  return `${pick(CURRENCIES, n)} ${amount.toLocaleString("en-US")}.00`;
}

type Template = (n: number) => Upload;

const TEMPLATES: Template[] = [
  (n) => ({
    name: `nda-${n}.pdf`,
    text: `MUTUAL NON-DISCLOSURE AGREEMENT\nThis agreement dated ${date(n)} is made between ${pick(ORGS, n)} and ${pick(ORGS, n + 3)}.\nThe disclosing party shall mark all confidential information as such. Con-\nfidential information excludes public knowledge.\fSigned for ${pick(ORGS, n)} by ${pick(PEOPLE, n)}.`,
  }),
  (n) => ({
    name: `lease-${n}.pdf`,
    text: `COMMERCIAL LEASE\nLandlord: ${pick(ORGS, n + 1)}. Tenant: ${pick(ORGS, n + 5)}.\nThe tenant leases the premises from ${date(n)} for a monthly rent of ${money(n)}.\fThe landlord maintains the premises. Witness: ${pick(PEOPLE, n + 2)}.`,
  }),
  (n) => ({
    name: `employment-${n}.pdf`,
    text: `EMPLOYMENT CONTRACT\n${pick(ORGS, n + 2)} employs ${pick(PEOPLE, n + 1)} from ${date(n + 4)}.\nThe employee receives an annual salary of ${money(n + 11)}. Employment may end with three months' notice.`,
  }),
  (n) => ({
    name: `claim-${n}.pdf`,
    text: `IN THE HIGH COURT OF JUSTICE, Claim No ${1000 + n}\nPlaintiff: ${pick(ORGS, n + 4)}. Defendant: ${pick(ORGS, n + 6)}.\nThe plaintiff claims ${money(n + 3)} for breach of contract dated ${date(n + 8)}.\fCounsel for the defendant: ${pick(PEOPLE, n + 3)}.`,
  }),
  (n) => ({
    name: `invoice-${n}.pdf`,
    text: `INVOICE ${20_000 + n}\nFrom ${pick(ORGS, n)} to ${pick(ORGS, n + 7)}, issued ${date(n + 2)}.\nLegal services: ${money(n + 5)}. Amount due: ${money(n + 5)}. Payment terms: 30 days.`,
  }),
  (n) => ({
    name: `letter-${n}.pdf`,
    text: `Dear ${pick(PEOPLE, n + 4)},\nthank you for your letter of ${date(n + 1)}. We will reply on behalf of ${pick(ORGS, n + 2)} next week.\nKind regards, ${pick(PEOPLE, n + 5)}`,
  }),
];

/** The n-th sample upload (n = 0, 1, 2, ...): the same n always gives the same document. */
export function sampleUpload(n: number): Upload {
  return pick(TEMPLATES, n)(n);
}

/** Makes an upload fail at `stage` on every delivery: a poison document. */
export function poisoned(upload: Upload, stage: Stage): Upload {
  return { name: `poison-${upload.name}`, text: `${upload.text}\n[[poison:${stage}]]` };
}

/** Makes an upload kill the worker that first takes it to `stage`. */
export function crashing(upload: Upload, stage: Stage): Upload {
  return { name: `crash-${upload.name}`, text: `${upload.text}\n[[crash:${stage}]]` };
}
