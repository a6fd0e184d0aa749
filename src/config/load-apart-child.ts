/**
 * The child process of `loadConfigApart`: validates the config file named by argv[2] with the
 * options in argv[3] (JSON), sends one answer over IPC and exits.
 */
import type { ApartAnswer } from './load-apart.ts';
import { ConfigError, loadConfigFile } from './load.ts';
import { processSecretSources } from './secrets.ts';

function validate(): ApartAnswer {
  const [path = '', options = '{}'] = process.argv.slice(2);
  try {
    return { config: loadConfigFile(path, processSecretSources, JSON.parse(options) as object) };
  } catch (error) {
    if (error instanceof ConfigError) return { source: path, problems: error.problems };
    return { error: (error as Error).message };
  }
}

if (!process.send) {
  process.stderr.write('load-apart-child: run by loadConfigApart, with an IPC channel\n');
  process.exit(2);
}
process.send(validate(), () => process.disconnect());
