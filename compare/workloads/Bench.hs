{-# LANGUAGE BangPatterns #-}
-- cryo compare's GHC workloads (non-threaded RTS, -O2, -with-rtsopts=-V0).
--
--   bench WORKLOAD N ANSWER MODE [FILE]
--     WORKLOAD  map  : Data.Map.Strict Int Int built by N inserts of scattered keys
--               text : a boxed array of N Text values (ghc-fastboot's case)
--     ANSWER    lookups : a handful of lookups (touches little of the heap)
--               fold    : a fold over every entry (touches everything)
--     MODE      cold : build, answer, exit
--               stop : build, raise(SIGSTOP) (the capture point of cryo and
--                      criu), answer, exit. Prints nothing before the stop.
--               save FILE : build, write the structure as a compact region
--               thaw FILE : read the compact region back, answer, exit
--
-- Output (stdout): "cryo-bench built=NS" (cold/save: CLOCK_MONOTONIC after
-- the build) and "cryo-bench answer=CHECKSUM at=NS" (after the answer).
import Control.DeepSeq (NFData, force)
import Control.Exception (evaluate)
import Control.Monad (foldM, forM_, when)
import Data.Array (Array, listArray, bounds, (!))
import qualified Data.Array as A
import Data.Bits (xor, (.&.))
import qualified Data.ByteString as B
import qualified Data.ByteString.Internal as BI
import qualified Data.ByteString.Unsafe as BU
import Data.Foldable (foldl')
import qualified Data.Map.Strict as M
import qualified Data.Text as T
import Data.Word (Word64)
import Foreign.ForeignPtr (withForeignPtr)
import Foreign.Marshal.Utils (copyBytes)
import Foreign.Ptr (Ptr, castPtr, plusPtr, ptrToWordPtr, wordPtrToPtr)
import GHC.Compact (Compact, compact, getCompact)
import GHC.Compact.Serialized
import System.Environment (getArgs)
import System.Exit (exitWith, ExitCode (..))
import System.IO
import System.Posix.Signals (raiseSignal, sigSTOP)

foreign import ccall unsafe "bench_now_ns" nowNs :: IO Word64

key :: Int -> Int
key i = (i * 2654435761) `mod` 4294967291

type TextArr = Array Int T.Text

buildMap :: Int -> M.Map Int Int
buildMap n = foldl' (\m i -> M.insert (key i) i m) M.empty [1 .. n]

buildText :: Int -> TextArr
buildText n = listArray (0, n - 1) [T.pack ("entry-" ++ show i ++ "-" ++ show (key i)) | i <- [0 .. n - 1]]

mix :: Int -> Int -> Int
mix acc x = (acc * 1000003) `xor` x

answerMap :: String -> Int -> M.Map Int Int -> Int
answerMap "lookups" n m = foldl' (\a i -> mix a (M.findWithDefault (-1) (key i) m)) 17 probes
  where probes = [1, 2, 3, n `div` 3, n `div` 2, n, n + 1, n * 2]
answerMap _ _ m = M.foldlWithKey' (\a k v -> mix (mix a k) v) 17 m

answerText :: String -> Int -> TextArr -> Int
answerText "lookups" n a = foldl' (\acc i -> mix acc (hashText (a ! (i `mod` n)))) 17 [0, 1, n `div` 3, n `div` 2, n - 1]
answerText _ _ a = foldl' (\acc t -> mix acc (hashText t)) 17 (A.elems a)

hashText :: T.Text -> Int
hashText = T.foldl' (\h c -> mix h (fromEnum c)) 5381

data W = WMap (M.Map Int Int) | WText TextArr

main :: IO ()
main = do
  args <- getArgs
  case args of
    [w, ns, ans, mode] -> run w (read ns) ans mode ""
    [w, ns, ans, mode, file] -> run w (read ns) ans mode file
    _ -> hPutStrLn stderr "usage: bench map|text N lookups|fold cold|stop|save FILE|thaw FILE" >> exitWith (ExitFailure 2)

run :: String -> Int -> String -> String -> FilePath -> IO ()
run "map" n ans mode file = go n ans mode file (buildMap n) (answerMap ans n)
run "text" n ans mode file = go n ans mode file (buildText n) (answerText ans n)
run w _ _ _ _ = hPutStrLn stderr ("bench: unknown workload " ++ w) >> exitWith (ExitFailure 2)

go :: NFData a => Int -> String -> String -> FilePath -> a -> (a -> Int) -> IO ()
go _ _ mode file build answer = case mode of
  "cold" -> do
    v <- evaluate (force build)
    stamp "built"
    report (answer v)
  "stop" -> do
    v <- evaluate (force build)
    raiseSignal sigSTOP
    report (answer v)
  "save" -> do
    v <- evaluate (force build)
    stamp "built"
    c <- compact v
    saveCompact file c
  "thaw" -> do
    c <- loadCompact file
    v <- case c of
      Just c' -> pure (getCompact c')
      Nothing -> hPutStrLn stderr "bench: importCompact refused the region" >> exitWith (ExitFailure 3)
    report (answer (v `asTypeOf` build))
  _ -> hPutStrLn stderr ("bench: unknown mode " ++ mode) >> exitWith (ExitFailure 2)

stamp :: String -> IO ()
stamp what = do
  t <- nowNs
  putStrLn ("cryo-bench " ++ what ++ "=" ++ show t)

report :: Int -> IO ()
report x = do
  r <- evaluate x
  t <- nowNs
  putStrLn ("cryo-bench answer=" ++ show r ++ " at=" ++ show t)
  hFlush stdout

-- A compact region on disk: root address, block count, per block its
-- original address and size, then the blocks' bytes in the same order.
saveCompact :: FilePath -> Compact a -> IO ()
saveCompact file c = withSerializedCompact c $ \s -> withBinaryFile file WriteMode $ \h -> do
  let blocks = serializedCompactBlockList s
  putW h (fromIntegral (ptrToWordPtr (serializedCompactRoot s)))
  putW h (fromIntegral (length blocks))
  forM_ blocks $ \(p, sz) -> putW h (fromIntegral (ptrToWordPtr p)) >> putW h (fromIntegral sz)
  forM_ blocks $ \(p, sz) -> hPutBuf h p (fromIntegral sz)

loadCompact :: FilePath -> IO (Maybe (Compact a))
loadCompact file = withBinaryFile file ReadMode $ \h -> do
  root <- getW h
  nb <- getW h
  blocks <- mapM (\_ -> do
      p <- getW h
      sz <- getW h
      pure (wordPtrToPtr (fromIntegral p), fromIntegral sz)) [1 .. nb]
  -- importCompact calls us once per block, in list order, to fill it
  importCompact (SerializedCompact blocks (wordPtrToPtr (fromIntegral root))) $ \dst sz -> do
    got <- hGetBuf h dst (fromIntegral sz)
    when (got /= fromIntegral sz) $ hPutStrLn stderr "bench: truncated compact file" >> exitWith (ExitFailure 3)

putW :: Handle -> Word64 -> IO ()
putW h w = B.hPut h (B.pack [fromIntegral (w `div` (256 ^ i)) | i <- [0 .. 7 :: Int]])

getW :: Handle -> IO Word64
getW h = do
  b <- B.hGet h 8
  when (B.length b /= 8) $ hPutStrLn stderr "bench: truncated compact file" >> exitWith (ExitFailure 3)
  pure (B.foldr' (\x acc -> acc * 256 + fromIntegral x) 0 b)
