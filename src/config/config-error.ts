/**
 * Every problem found in a config file, each as `path: message`. Its own module so a process
 * that only receives a validated config (`load-apart.ts`) can raise it without loading the
 * parser and the schema.
 */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}
