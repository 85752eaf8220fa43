;;;; smls from Common Lisp: SBCL with drakma (HTTP) and yason (JSON), loaded with ASDF.
;;;; Debian: apt-get install sbcl cl-drakma cl-yason
;;;; Run:    sbcl --script clients/lisp/embed.lisp [URL]

(require :asdf)
;; Quiet: compiling the libraries on first use prints a lot.
(let ((*standard-output* (make-broadcast-stream))
      (*error-output* (make-broadcast-stream)))
  (asdf:load-system :drakma)
  (asdf:load-system :yason))

;; smls answers application/json; read it as UTF-8 text rather than octets.
(push '("application" . "json") drakma:*text-content-types*)

(defun smls-url ()
  (or (second sb-ext:*posix-argv*) (sb-ext:posix-getenv "SMLS_URL") "http://127.0.0.1:8000"))

(defun embed (texts)
  "POST TEXTS as the form field message (a JSON array); return the vectors and the dimension."
  (multiple-value-bind (body status)
      (drakma:http-request (concatenate 'string (smls-url) "/embed")
                           :method :post
                           :parameters (list (cons "message" (with-output-to-string (s) (yason:encode texts s))))
                           :external-format-out :utf-8
                           :external-format-in :utf-8)
    (let ((json (yason:parse body)))
      (unless (= status 200)
        (error "smls answered ~a: ~a" status (gethash "message" (gethash "error" json))))
      (values (gethash "embeddings" json) (gethash "dimension" json)))))

(defun cosine (a b)
  (let ((dot 0d0) (na 0d0) (nb 0d0))
    (map nil (lambda (x y) (incf dot (* x y)) (incf na (* x x)) (incf nb (* y y))) a b)
    (/ dot (sqrt (* na nb)))))

(multiple-value-bind (vectors dimension)
    (embed '("The cat sits on the mat." "A cat is sitting on a rug." "Stock markets fell sharply." "Café crème, s'il vous plaît."))
  (format t "vectors: ~d, dimension: ~d~%" (length vectors) dimension)
  (format t "cosine(cat, cat): ~,3f~%" (cosine (first vectors) (second vectors)))
  (format t "cosine(cat, markets): ~,3f~%" (cosine (first vectors) (third vectors))))
