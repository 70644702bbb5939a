// What bin/ironbark runs. TypeScript is loaded through tsx, imported from here so that it is found
// in this checkout's node_modules whatever the caller's working directory (`node --import tsx`
// would look for it from the working directory).
import 'tsx';

await import('./main.ts');
