-- cryo compare's hello world: start-up and shutdown cost of the GHC RTS.
-- hello_main.c owns main (ghc -no-hs-main) so hs_init and hs_exit can be
-- timed apart.
module Hello where

foreign export ccall hello :: IO ()

hello :: IO ()
hello = putStrLn "Hello, world!"
