import { holdHeavySlot, isHeavySuite, waitForFreeSlot } from './heavy-slots.js';

// jest.config.js runs this before each integration suite file (setupFilesAfterEnv).
if (isHeavySuite(expect.getState().testPath ?? '')) holdHeavySlot();
else waitForFreeSlot();
