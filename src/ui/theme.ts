import kleur from "kleur";

/**
 * The prompts' colours through kleur, so NO_COLOR (and a non-colour terminal) turns every colour
 * off in one place.
 */
export const promptTheme = {
  prefix: { idle: kleur.cyan("?"), done: kleur.green("✓") },
  style: {
    answer: (text: string) => kleur.cyan(text),
    message: (text: string) => kleur.bold(text),
    error: (text: string) => kleur.red(`> ${text}`),
    defaultAnswer: (text: string) => kleur.dim(`(${text})`),
    help: (text: string) => kleur.dim(text),
    highlight: (text: string) => kleur.cyan(text),
    key: (text: string) => kleur.cyan().bold(`<${text}>`),
    description: (text: string) => kleur.dim(text),
    disabled: (text: string) => kleur.dim(text),
    keysHelpTip: (keys: [string, string][]) =>
      keys.map(([key, action]) => `${kleur.bold(key)} ${kleur.dim(action)}`).join(kleur.dim(" · ")),
  },
};
