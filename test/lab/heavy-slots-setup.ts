import { holdHeavySlot, isHeavySuite, waitForFreeSlot } from './heavy-slots.js';

// jest.config.js runs this before each integration suite file (setupFilesAfterEnv).
const testPath = expect.getState().testPath ?? '';
if (isHeavySuite(testPath)) holdHeavySlot(testPath);
else waitForFreeSlot();
