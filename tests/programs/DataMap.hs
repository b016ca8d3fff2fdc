-- GHC target for cryo's tests (non-threaded RTS): builds a Data.Map from N
-- keys, prints READY, stops itself (mode stop: raiseSignal sigSTOP) or
-- blocks on stdin (mode read) or goes straight on (mode run); afterwards prints PASS with the map's sum.
import qualified Data.Map.Strict as M
import System.Environment (getArgs)
import System.IO
import System.Posix.Signals (raiseSignal, sigSTOP)
import System.Posix.Process (getProcessID)

main :: IO ()
main = do
  args <- getArgs
  let mode = case args of (m:_) -> m; _ -> "stop"
      n = case args of (_:k:_) -> read k; _ -> 100000 :: Int
      m = M.fromList [(k, k * 7 + 1) | k <- [1 .. n]]
  M.size m `seq` M.foldl' (+) 0 m `seq` return ()
  pid <- getProcessID
  putStrLn ("READY " ++ show pid)
  hFlush stdout
  case mode of
    "stop" -> raiseSignal sigSTOP
    "run" -> pure () -- no capture point: the cold-start baseline
    _ -> () <$ getChar
  let s = M.foldl' (+) 0 m
      ok = M.lookup 12345 m == Just (12345 * 7 + 1)
  if ok then putStrLn ("PASS " ++ show s) else putStrLn "FAIL lookup"
